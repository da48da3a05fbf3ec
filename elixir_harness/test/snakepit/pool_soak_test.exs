defmodule Snakepit.PoolSoakTest do
  # A bounded soak (about 20 s) of the pool's production behaviours at once:
  # recycling (max_calls), elastic size, a rolling reload and kill -9 of
  # workers, under callers doing plain and idempotent calls. Every call is
  # answered exactly once (no late or second reply reaches a caller), none is
  # lost, and no OS process is left after stop. Tagged :soak so it can be
  # picked out (`mix test --only soak`); `mix test` runs it like any other.
  use ExUnit.Case, async: false

  import Snakepit.TestHelpers
  alias Snakepit.{Error, Pool}

  @moduletag :soak
  @worker Path.expand("../fixtures/pool_worker.py", __DIR__)
  @callers 6
  @run_ms 15_000

  test "recycling, scaling, kills and a reload at once: every call answered exactly once, nothing left" do
    name = unique_name("soak")

    {:ok, sup} =
      Pool.start_link(
        name: name,
        target: @worker,
        size: 2,
        min_size: 2,
        max_size: 4,
        scale_up_wait: 50,
        scale_down_idle: 1_000,
        max_calls: 150,
        events: self()
      )

    test = self()

    {results, seen, stats} =
      capture_log_result(fn ->
        callers =
          for c <- 1..@callers do
            spawn_link(fn ->
              :rand.seed(:exsss, {c, 3, 5})
              send(test, {:done, self(), run_ops(name, c, 0, %{ok: 0, crashed: 0, bad: []})})
            end)
          end

        deadline = System.monotonic_time(:millisecond) + @run_ms
        seen = chaos(name, deadline, MapSet.new(all_os_pids(name)), false)
        Enum.each(callers, &send(&1, :stop))

        results =
          for pid <- callers do
            assert_receive {:done, ^pid, result}, 60_000
            result
          end

        wait_until(fn -> Pool.stats(name).ready >= 2 end, 30_000)
        # the reload began midway; with kills and recycling around it, it may still run
        wait_until(fn -> match?(%{reload: %{in_progress: false}}, Pool.stats(name)) end, 30_000)
        {results, MapSet.union(seen, MapSet.new(all_os_pids(name))), Pool.stats(name)}
      end)

    for r <- results do
      assert r.bad == [], "unexpected outcomes: #{inspect(r.bad, limit: 10)}"
      assert r.ok > 0
      assert r.stray == [], "late or second replies: #{inspect(r.stray, limit: 10)}"
    end

    # every behaviour happened
    assert stats.recycled >= 1
    assert stats.restarts >= 1
    assert %{reload: %{in_progress: false}} = stats
    assert_received {:snakepit_pool, ^name, {:scaled, 2, 3, _}}
    assert {:ok, 1} = Snakepit.call(name, %{method: "echo", args: [1]})

    stop_leaving_nothing(sup, name, seen)
  end

  # Kills a worker every 1.5 s and reloads the pool once, midway; collects OS pids.
  defp chaos(name, deadline, seen, reloaded?) do
    now = System.monotonic_time(:millisecond)

    if now >= deadline do
      seen
    else
      Process.sleep(min(1_500, deadline - now))
      seen = MapSet.union(seen, MapSet.new(all_os_pids(name)))

      reloaded? =
        if not reloaded? and deadline - now < div(@run_ms, 2) do
          spawn(fn -> Pool.reload(name, 60_000) end)
          true
        else
          reloaded?
        end

      case Enum.filter(Pool.stats(name).worker_details, &(&1.status in [:idle, :busy])) do
        [] -> :ok
        live -> kill9(Enum.random(live).os_pid)
      end

      chaos(name, deadline, seen, reloaded?)
    end
  end

  # Each op is a call whose answer is known: a plain echo, or an idempotent
  # lookup (retried once when its worker dies) that takes a little while.
  defp run_ops(name, c, i, acc) do
    receive do
      :stop -> Map.put(acc, :stray, drain_mailbox())
    after
      0 ->
        value = {c, i}

        {method, args} =
          if rem(i, 2) == 0,
            do: {"echo", [value]},
            else: {"lookup", [value, :rand.uniform(40) / 1000]}

        acc =
          case Snakepit.call(name, %{method: method, args: args}, timeout: 30_000) do
            {:ok, ^value} -> %{acc | ok: acc.ok + 1}
            {:error, %Error{kind: :worker_crashed}} -> %{acc | crashed: acc.crashed + 1}
            other -> %{acc | bad: [{method, other} | acc.bad]}
          end

        run_ops(name, c, i + 1, acc)
    end
  end

  # Anything left in a caller's mailbox would be a second or late reply.
  defp drain_mailbox(acc \\ []) do
    receive do
      msg -> drain_mailbox([msg | acc])
    after
      200 -> acc
    end
  end
end
