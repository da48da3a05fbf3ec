defmodule Snakepit.SoakTest do
  # A bounded soak (about 15 s): callers doing calls, streams, cancels and
  # timeouts while workers are killed. Tagged :soak so it can be picked out
  # (`mix test --only soak`); `mix test` runs it like any other.
  use ExUnit.Case, async: false

  import Snakepit.TestHelpers
  alias Snakepit.{Error, Pool, Stream}

  @moduletag :soak

  @callers 8
  @run_ms 12_000
  @kill_every_ms 2_000
  # no single operation may take longer than this: past it, it hangs
  @op_limit 30_000

  test "3 workers, 8 callers, a worker killed every 2 s: every call gets exactly one answer, none hangs, nothing is left" do
    name = unique_name("soak")
    {:ok, sup} = Pool.start_link(name: name, target: test_worker(), size: 3)
    test = self()
    seen = MapSet.new(all_os_pids(name))

    {seen, results} =
      capture_log_result(fn ->
        callers =
          for c <- 1..@callers do
            spawn_link(fn ->
              :rand.seed(:exsss, {c, 7, 11})
              send(test, {:done, self(), run_ops(name, c, 0, %{})})
            end)
          end

        seen = kill_loop(name, System.monotonic_time(:millisecond) + @run_ms, seen)
        for pid <- callers, do: send(pid, :stop)

        results =
          for pid <- callers do
            assert_receive {:done, ^pid, result}, @op_limit * 2
            result
          end

        wait_until(fn -> Pool.stats(name).ready == 3 end, 20_000)
        seen = MapSet.union(seen, MapSet.new(all_os_pids(name)))
        {seen, results}
      end)

    for result <- results do
      assert result.bad == [], "unexpected outcomes: #{inspect(result.bad, limit: 20)}"
      assert result.ops > 0
    end

    # every kind of operation happened, and some calls met a kill
    totals = Enum.reduce(results, %{}, &Map.merge(&2, &1.kinds, fn _, a, b -> a + b end))
    assert Enum.all?([:call, :stream, :cancel, :timeout], &(Map.get(totals, &1, 0) > 0))
    assert Pool.stats(name).restarts >= 1
    assert {:ok, 3} = Snakepit.call(name, %{method: "add", args: [1, 2]})

    stop_leaving_nothing(sup, name, seen)
  end

  defp kill_loop(name, until, seen) do
    now = System.monotonic_time(:millisecond)

    if now >= until do
      seen
    else
      Process.sleep(min(@kill_every_ms, until - now))
      live = Enum.filter(Pool.stats(name).worker_details, &(&1.status != :down))
      seen = MapSet.union(seen, MapSet.new(all_os_pids(name)))

      case live do
        [] -> :ok
        workers -> kill9(Enum.random(workers).os_pid)
      end

      kill_loop(name, until, seen)
    end
  end

  # Each caller runs random operations until told to stop, and checks each
  # one's outcome; anything unexpected (a wrong answer, a second answer, no
  # answer within @op_limit) goes into `bad`.
  defp run_ops(name, c, n, kinds, bad \\ []) do
    receive do
      :stop -> %{ops: n, kinds: kinds, bad: bad ++ strays()}
    after
      0 ->
        kind = Enum.random([:call, :call, :stream, :cancel, :timeout])
        outcome = op(kind, name, {c, n})
        bad = if outcome == :ok, do: bad, else: [{kind, outcome} | bad]
        run_ops(name, c, n + 1, Map.update(kinds, kind, 1, &(&1 + 1)), bad)
    end
  end

  defp op(:call, name, tag) do
    case Snakepit.call(name, %{method: "echo", args: [tag]}, timeout: @op_limit) do
      {:ok, ^tag} -> :ok
      {:error, %Error{kind: :worker_crashed}} -> :ok
      other -> other
    end
  end

  # A call that outlives its timeout: the caller's own :timeout is its answer.
  defp op(:timeout, name, _tag) do
    case Snakepit.call(name, %{method: "sleep", args: [5]}, timeout: 100) do
      {:error, %Error{kind: kind}} when kind in [:timeout, :worker_crashed] -> :ok
      other -> other
    end
  end

  defp op(:stream, name, tag) do
    case open(name, %{method: "count", args: [20, 0.002]}, tag) do
      {:ok, _ref} ->
        case collect_stream(tag, @op_limit) do
          {chunks, {:end, 20}} when length(chunks) == 20 -> prefix(chunks)
          {chunks, {:error, %Error{kind: :worker_crashed}}} -> prefix(chunks)
          other -> other
        end

      other ->
        other
    end
  end

  defp op(:cancel, name, tag) do
    case open(name, %{method: "count", args: [100_000, 0.001]}, tag) do
      {:ok, ref} ->
        if :rand.uniform(2) == 1, do: Process.sleep(:rand.uniform(20))
        :ok = Stream.cancel(ref)

        case collect_stream(tag, @op_limit) do
          {chunks, {:error, %Error{kind: kind}}} when kind in [:cancelled, :worker_crashed] ->
            prefix(chunks)

          other ->
            other
        end

      other ->
        other
    end
  end

  defp open(name, request, tag) do
    me = self()
    Stream.open(name, request, fn event -> send(me, {:event, tag, event}) end)
  end

  # chunks arrive in order, from 0, with none missing or repeated
  defp prefix(chunks) do
    if chunks == Enum.to_list(0..(length(chunks) - 1)//1), do: :ok, else: {:chunks, chunks}
  end

  # anything still in the mailbox is an answer too many
  defp strays do
    receive do
      msg -> [{:stray, msg} | strays()]
    after
      200 -> []
    end
  end
end
