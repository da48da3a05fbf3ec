defmodule Snakepit.TroubleshootingTest do
  # docs/troubleshooting.md quotes the errors users hit. Each test here
  # triggers one that the harness produces and checks that what the user
  # sees matches the doc's message for that heading (`…` in the doc stands for
  # the part that varies). tests/test_troubleshooting.py checks that every
  # message in the doc is covered here or there.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Snakepit.TestHelpers
  alias Snakepit.{Error, Pool}

  @doc_path Path.expand("../../../docs/troubleshooting.md", __DIR__)
  @external_resource @doc_path

  # heading => the text of the first ```text block after it (before the next heading)
  @messages @doc_path
            |> File.read!()
            |> String.split("\n")
            |> Enum.reduce({nil, nil, %{}}, fn
              "### " <> heading, {_, nil, acc} ->
                {heading, nil, acc}

              "#" <> _, {_, nil, acc} ->
                {nil, nil, acc}

              "```text", {heading, nil, acc} ->
                {heading, [], acc}

              "```", {heading, lines, acc} when is_list(lines) ->
                text = lines |> Enum.reverse() |> Enum.join("\n")
                {nil, nil, if(heading, do: Map.put_new(acc, heading, text), else: acc)}

              line, {heading, lines, acc} when is_list(lines) ->
                {heading, [line | lines], acc}

              _, state ->
                state
            end)
            |> elem(2)

  defp pattern(heading) do
    text = Map.get(@messages, heading) || flunk("no ```text block under \"### #{heading}\"")

    text
    |> String.split("…")
    |> Enum.map_join("[\\s\\S]*?", &Regex.escape/1)
    |> Regex.compile!()
  end

  defp assert_shown(heading, seen) do
    assert seen =~ pattern(heading),
           "docs/troubleshooting.md, \"#{heading}\":\n#{@messages[heading]}\n\nnot in:\n#{seen}"
  end

  defp shown(%Error{} = error), do: Exception.message(error)

  defp call(pool, method, args, opts \\ [timeout: 30_000]),
    do: Snakepit.call(pool, %{method: method, args: args}, opts)

  defp start_error(opts) do
    capture_log(fn ->
      send(self(), Pool.start_link([name: unique_name(), size: 1] ++ opts))
    end)

    assert_received {:error, %Error{kind: :start_failed} = error}
    error
  end

  test "the pool's queue is full" do
    pool = start_pool(size: 1, max_queue: 1)
    blocker = Task.async(fn -> call(pool, "sleep", [2], timeout: 60_000) end)
    wait_until(fn -> Pool.stats(pool).busy == 1 end)
    queued = Task.async(fn -> call(pool, "echo", [1], timeout: 60_000) end)
    wait_until(fn -> Pool.stats(pool).queue_depth == 1 end)
    assert {:error, %Error{kind: :overloaded} = error} = call(pool, "echo", [2])
    assert_shown("The pool's queue is full", shown(error))
    assert {:ok, _} = Task.await(blocker, 60_000)
    assert {:ok, 1} = Task.await(queued, 60_000)
  end

  test "the circuit is open" do
    pool = start_pool(size: 1, circuit_breaker: [threshold: 1, cooldown: 60_000])

    capture_log(fn -> assert {:error, %Error{kind: :worker_crashed}} = call(pool, "crash", []) end)

    assert {:error, %Error{kind: :circuit_open} = error} = call(pool, "echo", [1])
    assert_shown("The circuit is open", shown(error))
  end

  test "a call times out" do
    pool = start_pool(size: 1)
    assert {:error, %Error{kind: :timeout} = error} = call(pool, "sleep", [30], timeout: 300)
    assert_shown("A call times out", shown(error))
  end

  test "the worker crashed" do
    pool = start_pool(size: 2)

    capture_log(fn ->
      assert {:error, %Error{kind: :worker_crashed} = error} = call(pool, "crash", [])
      assert_shown("The worker crashed", shown(error))
    end)
  end

  test "Python is not found" do
    error = start_error(target: test_worker(), python: "/no/such/python3")
    assert_shown("Python is not found", shown(error))
  end

  @tag :tmp_dir
  test "snakepit_py is not installed in that Python", %{tmp_dir: dir} do
    # a Python that sees no site-packages (-S) nor the environment (-I): as a
    # python3 into which snakepit_py was never installed
    python = Path.join(dir, "bare_python3")
    File.write!(python, "#!/bin/sh\nexec #{System.find_executable("python3")} -I -S \"$@\"\n")
    File.chmod!(python, 0o755)

    assert {_, status} =
             System.cmd(python, ["-c", "import snakepit_py"], stderr_to_stdout: true, cd: "/")

    assert status != 0

    error = start_error(target: test_worker(), python: python, cd: "/")
    assert_shown("snakepit_py is not installed in that Python", shown(error))
  end

  test "the worker did not send :ready in time" do
    error = start_error(target: fixture("slow_import_worker.py"), start_timeout: 300)
    assert_shown("The worker did not send :ready in time", shown(error))
  end

  @tag :tmp_dir
  test "a result carries an atom the BEAM does not know", %{tmp_dir: dir} do
    worker = Path.join(dir, "atom_worker.py")

    File.write!(worker, """
    import snakepit_py

    @snakepit_py.method
    def status():
        return snakepit_py.Atom("troubleshooting_#{System.unique_integer([:positive])}")
    """)

    pool = start_pool(target: worker, size: 1)

    capture_log(fn ->
      assert {:error, %Error{kind: :protocol_error} = error} = call(pool, "status", [])
      assert_shown("A result carries an atom the BEAM does not know", shown(error))
    end)
  end

  test "the pool is not running" do
    assert {:error, %Error{kind: :noproc} = error} = call(:no_such_pool, "echo", [1])
    assert_shown("The pool is not running", shown(error))
  end
end
