defmodule Snakepit.BeamCallsTest do
  # Python calls the BEAM (protocol 1.1, docs/protocol.md §9), against real
  # Python workers: tests/workers/beam_caller.py calls the functions below.
  use ExUnit.Case, async: true
  @moduletag :capture_log

  import Snakepit.TestHelpers

  alias Snakepit.{Error, Worker}

  @worker Path.expand("../../../tests/workers/beam_caller.py", __DIR__)

  defp functions(test, name) do
    %{
      "double" => fn x -> 2 * x end,
      "boom" => fn -> raise ArgumentError, "no such user" end,
      "exit" => fn -> exit(:oops) end,
      "throw" => fn -> throw(:ball) end,
      "slow" => fn ->
        send(test, {:slow_started, self()})
        Process.sleep(:infinity)
      end,
      "whoami" => fn ->
        ctx = Worker.beam_call_context()
        %{"call_id" => ctx.call_id, "worker_id" => ctx.worker_id, "function" => ctx.function}
      end,
      # calls back into the very worker that called it
      "echo_back" => fn x ->
        case Worker.call(name, %{method: "echo", args: [x]}, timeout: 10_000) do
          {:ok, v} -> v
          {:error, e} -> raise e
        end
      end,
      # where a call ran, and what it left behind there
      "where" => fn -> ran_in(test) end,
      "raise_in" => fn ->
        ran_in(test)
        raise ArgumentError, "gone"
      end,
      "leave_dict" => fn -> ran_in(test, fn -> Process.put(:leftover, 1) end) end,
      "leave_link" => fn -> ran_in(test, fn -> spawn_link(fn -> Process.sleep(2_000) end) end) end,
      "leave_monitor" => fn -> ran_in(test, fn -> Process.monitor(test) end) end,
      "leave_message" => fn -> ran_in(test, fn -> send(self(), :stray) end) end,
      "leave_trap" => fn -> ran_in(test, fn -> Process.flag(:trap_exit, true) end) end,
      "leave_table" => fn -> ran_in(test, fn -> :ets.new(:leftover, []) end) end,
      "leave_name" => fn ->
        ran_in(test, fn ->
          Process.register(self(), :"leftover_#{System.unique_integer([:positive])}")
        end)
      end,
      "grow_heap" => fn ->
        # (a list of 100 000 held in the dictionary while the call runs: a big heap after it)
        ran_in(test, fn ->
          Process.put(:big, Enum.to_list(1..100_000))
          Process.delete(:big)
        end)
      end,
      "aecho_back" => fn x ->
        {:ok, v} = Worker.call(name, %{method: "aecho", args: [x]}, timeout: 10_000)
        v
      end
    }
  end

  # Tells the test which process ran the call (after `leave`, what it leaves behind).
  defp ran_in(test, leave \\ fn -> :ok end) do
    leave.()
    send(test, {:ran_in, self()})
    :ok
  end

  defp start_worker(opts \\ []) do
    name = unique_name("beam_worker")

    opts =
      Keyword.merge(
        [target: @worker, name: name, beam_functions: functions(self(), name)],
        opts
      )

    pid = start_supervised!({Worker, opts}, id: name)
    {pid, name}
  end

  defp call(w, method, args, opts \\ []),
    do: Worker.call(w, %{method: method, args: args}, Keyword.put_new(opts, :timeout, 10_000))

  defp call(w, method, args, kwargs, opts),
    do: Worker.call(w, %{method: method, args: args, kwargs: kwargs}, opts)

  describe "announcing" do
    test "a 1.1 worker lists :beam_call and is told the functions" do
      {w, _} = start_worker()
      assert :beam_call in Worker.info(w).ready.features
      {:ok, names} = call(w, "functions", [])
      assert Enum.sort(names) == Enum.sort(Map.keys(functions(self(), :x)))
    end

    test "a worker that does not list the feature is told nothing" do
      # (the worker reads SNAKEPIT_PROTOCOL: told 1.0, its :ready is 1.0's)
      {w, _} = start_worker(env: [{"SNAKEPIT_PROTOCOL", "1.0"}])
      refute Map.has_key?(Worker.info(w).ready, :features)
      assert {:ok, []} = call(w, "functions", [])

      assert {:ok, %{"kind" => "unknown_function", "message" => msg}} =
               call(w, "ask_error", ["double", 1])

      assert msg =~ "serves no BEAM functions"
    end

    test "the pool passes :beam_functions to its workers" do
      name = unique_name()

      pool =
        start_pool(
          name: name,
          target: @worker,
          size: 2,
          beam_functions: %{"double" => &(&1 * 2)}
        )

      assert {:ok, 8} = Snakepit.call(pool, %{method: "ask", args: ["double", 4]})
    end

    test ":beam_functions must map strings to functions" do
      assert_raise ArgumentError, ~r/:beam_functions must be a map .* got: %{a: 1}/, fn ->
        Worker.start_link(target: @worker, beam_functions: %{a: 1})
      end
    end
  end

  describe "replies" do
    setup do
      {w, name} = start_worker()
      %{w: w, name: name}
    end

    test "{:ok, result}, from a sync method, a generator, an async method and a thread", %{w: w} do
      assert {:ok, 42} = call(w, "ask", ["double", 21])
      assert {:ok, 10} = call(w, "aask", ["double", 5])
      assert {:ok, %{"result" => 8}} = call(w, "from_thread", ["double", 4])

      me = self()

      {:ok, _ref} =
        Snakepit.Stream.open(w, %{method: "ask_stream", args: ["double", 4]}, &send(me, &1))

      chunks = for _ <- 1..4, do: assert_receive({:data, c}, 10_000) && c
      assert chunks == [0, 2, 4, 6]
      assert_receive {:end, 24}, 10_000
    end

    test "the beam call carries the id of the call it is made under", %{w: w} do
      {:ok, %{"call_id" => id, "result" => ctx}} = call(w, "ask_with_id", ["whoami"])
      assert is_integer(id) and ctx["call_id"] == id
      assert ctx["function"] == "whoami"
      assert ctx["worker_id"] == Worker.info(w).worker_id
      # outside a call (a thread the method started): nil
      {:ok, %{"result" => ctx}} = call(w, "from_thread", ["whoami"])
      assert ctx["call_id"] == nil
    end

    test ":exception, with the exception's module, for a raise, an exit and a throw", %{w: w} do
      assert {:ok,
              %{"kind" => "exception", "type" => "ArgumentError", "message" => "no such user"}} =
               call(w, "ask_error", ["boom"])

      assert {:ok, %{"kind" => "exception", "type" => "exit", "message" => "exited: :oops"}} =
               call(w, "ask_error", ["exit"])

      assert {:ok, %{"kind" => "exception", "type" => "throw"}} = call(w, "ask_error", ["throw"])
    end

    test ":bad_arguments for the wrong number of arguments", %{w: w} do
      assert {:ok, %{"kind" => "bad_arguments", "message" => msg}} =
               call(w, "ask_error", ["double", 1, 2])

      assert msg =~ "takes 1 argument(s), got 2"
    end

    test ":unknown_function: checked in Python before sending, and by the harness", %{w: w} do
      assert {:ok, %{"kind" => "unknown_function", "message" => msg}} =
               call(w, "ask_error", ["nope"])

      assert msg =~ "serves no function 'nope'"

      assert {:ok, %{"kind" => "unknown_function", "message" => msg}} =
               call(w, "ask_unannounced", ["nope"])

      assert msg =~ ~s(no BEAM function "nope")
    end

    test ":timeout: the harness kills a function past its timeout_ms", %{w: w} do
      assert {:ok, %{"kind" => "timeout"}} = call(w, "ask_beam_timeout", ["slow", 200])
      assert_receive {:slow_started, pid}, 5_000
      assert_down(pid)
    end

    test "a Python timeout: :timeout, and the function's process is killed", %{w: w} do
      # (Python's wait and the harness's timer run out together: either says so)
      assert {:ok, %{"kind" => "timeout", "message" => msg}} =
               call(w, "ask_error", ["slow"], %{"timeout" => 0.2}, timeout: 10_000)

      assert msg =~ ~r/did not reply within 0.2 s|ran past its timeout/
      assert_receive {:slow_started, pid}, 5_000
      assert_down(pid)
    end

    test ":cancelled when the function's process is killed from outside", %{w: w} do
      task = Task.async(fn -> call(w, "ask_error", ["slow"]) end)
      assert_receive {:slow_started, pid}, 5_000
      Process.exit(pid, :kill)
      assert {:ok, %{"kind" => "cancelled"}} = Task.await(task, 10_000)
    end

    test "1000 concurrent beam calls from async code", %{w: w} do
      assert {:ok, results} = call(w, "amany", ["double", 1000], timeout: 60_000)
      assert results == Enum.map(0..999, &(&1 * 2))
    end
  end

  describe "runners: the process a beam call runs in" do
    setup do
      {w, name} = start_worker()
      %{w: w, name: name}
    end

    defp ran_where(w, function) do
      assert {:ok, _} = call(w, "ask_error", [function])
      assert_receive {:ran_in, pid}, 5_000
      pid
    end

    test "one that finished clean runs the next call; one at a time", %{w: w} do
      first = ran_where(w, "where")
      assert ran_where(w, "where") == first
      # under the worker's Task.Supervisor, not the worker itself
      sup = :sys.get_state(w).beam_sup
      assert first in Task.Supervisor.children(sup)
      refute first == w
    end

    test "one whose function raised, or left something behind, is not reused", %{w: w} do
      for function <-
            ~w(raise_in leave_dict leave_link leave_monitor leave_message leave_trap leave_table
               leave_name grow_heap) do
        ran_where(w, "where")
        dirty = ran_where(w, function)
        assert_down(dirty)
        refute ran_where(w, "where") == dirty, "#{function}: its runner served another call"
      end
    end

    test "at most 16 wait idle after a burst; stopping the worker ends them all", %{w: w} do
      assert {:ok, _} = call(w, "amany", ["double", 200], timeout: 60_000)
      sup = :sys.get_state(w).beam_sup
      assert wait_until(fn -> length(Task.Supervisor.children(sup)) <= 16 end)
      assert length(:sys.get_state(w).beam_idle) == length(Task.Supervisor.children(sup))
      ref = Process.monitor(sup)
      GenServer.stop(w)
      assert_receive {:DOWN, ^ref, :process, ^sup, _}, 5_000
    end

    test "an idle one killed from outside is forgotten; the next call gets a new one", %{w: w} do
      idle = ran_where(w, "where")
      Process.exit(idle, :kill)
      assert_down(idle)
      assert wait_until(fn -> :sys.get_state(w).beam_idle == [] end)
      refute ran_where(w, "where") == idle
    end

    test "idle ones outlive a crash of the Python process and serve its successor", %{w: w} do
      idle = ran_where(w, "where")
      os_pid = Worker.info(w).os_pid
      System.cmd("kill", ["-9", to_string(os_pid)])
      assert wait_until(fn -> ok_or_nil(call(w, "echo", [1])) end)
      refute Worker.info(w).os_pid == os_pid
      assert ran_where(w, "where") == idle
    end
  end

  describe "cancel" do
    setup do
      {w, name} = start_worker()
      %{w: w, name: name}
    end

    test "cancelling a sync call interrupts its wait and stops the function", %{w: w} do
      assert {:error, %Error{kind: :timeout}} = call(w, "wait_for_cancel", ["slow"], timeout: 300)
      assert_receive {:slow_started, pid}, 5_000
      assert_down(pid)
      assert wait_until(fn -> call(w, "finally_count", []) == {:ok, 1} end)
    end

    test "cancelling an async call cancels its await and stops the function", %{w: w} do
      assert {:error, %Error{kind: :timeout}} =
               call(w, "await_for_cancel", ["slow"], timeout: 300)

      assert_receive {:slow_started, pid}, 5_000
      assert_down(pid)
      assert wait_until(fn -> call(w, "finally_count", []) == {:ok, 1} end)
    end

    test "while a method waits, health, other calls and other replies flow", %{w: w} do
      task = Task.async(fn -> call(w, "wait_for_cancel", ["slow"], timeout: 30_000) end)
      assert_receive {:slow_started, pid}, 5_000
      assert {:ok, %{status: _}} = Worker.health_check(w)
      assert {:ok, 7} = call(w, "aecho", [7])
      assert {:ok, 6} = call(w, "aask", ["double", 3])
      Process.exit(pid, :kill)
      assert {:error, %Error{kind: :exception, type: "BeamCallError"}} = Task.await(task, 10_000)
    end

    test "a worker crash kills the beam calls it had outstanding", %{w: w} do
      task = Task.async(fn -> call(w, "wait_for_cancel", ["slow"]) end)
      assert_receive {:slow_started, pid}, 5_000
      System.cmd("kill", ["-9", to_string(Worker.info(w).os_pid)])
      assert {:error, %Error{kind: :worker_crashed}} = Task.await(task, 10_000)
      assert_down(pid)
      assert {:ok, 4} = wait_until(fn -> ok_or_nil(call(w, "ask", ["double", 2])) end)
    end
  end

  describe "re-entrancy: a BEAM function calling its own worker" do
    test "with --threads 1 a sync method waiting makes the call back fail fast" do
      {w, _} = start_worker()

      assert {:ok, %{"kind" => "exception", "type" => "Snakepit.Error", "message" => msg}} =
               call(w, "ask_error", ["echo_back", 5])

      assert msg =~ "would_deadlock"
      assert msg =~ "its only sync thread"
      # nothing is left stuck
      assert {:ok, 1} = call(w, "echo", [1])
    end

    test "an async method may be called back, and a sync one from an async wait" do
      {w, _} = start_worker()
      assert {:ok, 5} = call(w, "ask", ["aecho_back", 5])
      assert {:ok, 5} = call(w, "aask", ["echo_back", 5])
    end

    test "with --threads 2 the call back runs" do
      {w, _} = start_worker(worker_opts: [threads: 2])
      assert {:ok, 5} = call(w, "ask", ["echo_back", 5])
    end
  end

  defp ok_or_nil({:ok, v}), do: {:ok, v}
  defp ok_or_nil(_), do: nil

  defp assert_down(pid) do
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, _}, 5_000
  end
end
