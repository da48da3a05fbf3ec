defmodule Snakepit.PoolRecycleTest do
  # Worker recycling and rolling reload with real Python workers: a worker due
  # for replacement (`:max_calls`, `:max_age`, `:max_memory_mb`, `reload/2`)
  # is replaced surge-first, drained, then stopped; no call fails and the
  # ready workers never drop below the pool's size meanwhile.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Snakepit.TestHelpers
  alias Snakepit.Pool

  @worker Path.expand("../fixtures/pool_worker.py", __DIR__)

  # Samples Pool.stats(pool).ready until told to stop; answers the lowest seen.
  defp watch_ready(pool) do
    test = self()

    spawn_link(fn ->
      loop = fn loop, low ->
        receive do
          :stop -> send(test, {:lowest_ready, low})
        after
          2 -> loop.(loop, min(low, Pool.stats(pool).ready))
        end
      end

      loop.(loop, Pool.stats(pool).ready)
    end)
  end

  defp lowest_ready(watcher) do
    send(watcher, :stop)
    assert_receive {:lowest_ready, low}, 5_000
    low
  end

  # Calls whoami (each must succeed) until `done?`; the pids that answered.
  defp call_until(pool, done?, acc \\ [], deadline \\ nil) do
    deadline = deadline || System.monotonic_time(:millisecond) + 30_000
    assert {:ok, pid} = whoami(pool)

    cond do
      done?.() -> Enum.reverse([pid | acc])
      System.monotonic_time(:millisecond) > deadline -> flunk("condition not met in time")
      true -> call_until(pool, done?, [pid | acc], deadline)
    end
  end

  defp whoami(pool), do: Snakepit.call(pool, %{method: "whoami"}, timeout: 30_000)

  describe "max_calls" do
    test "workers are replaced after max_calls; no call fails; ready never drops below size" do
      pool = start_pool(target: @worker, size: 2, max_calls: 5, max_calls_jitter: 0)
      first = MapSet.new(os_pids(pool))
      watcher = watch_ready(pool)

      # calls go on (each must succeed) until four workers have been replaced
      pids = call_until(pool, fn -> Pool.stats(pool).recycled >= 4 end)
      assert lowest_ready(watcher) >= 2

      seen = MapSet.new(pids)
      assert MapSet.size(seen) > 2
      # the first workers are gone, processes and all
      for pid <- first, do: assert_os_pid_exited(pid)
      wait_until(fn -> match?(%{actual_size: 2, ready: 2, draining: 0}, Pool.stats(pool)) end)
    end

    test "under concurrent callers every call is answered" do
      pool = start_pool(target: @worker, size: 2, max_calls: 10)

      test = self()

      callers =
        for c <- 1..4 do
          spawn_link(fn ->
            results =
              Stream.iterate(1, &(&1 + 1))
              |> Enum.reduce_while([], fn i, acc ->
                receive do
                  :stop -> {:halt, acc}
                after
                  0 ->
                    {:cont, [{i, Snakepit.call(pool, %{method: "echo", args: [{c, i}]})} | acc]}
                end
              end)

            send(test, {:results, c, results})
          end)
        end

      wait_until(fn -> Pool.stats(pool).recycled >= 4 end, 30_000)
      Enum.each(callers, &send(&1, :stop))

      for c <- 1..4 do
        assert_receive {:results, ^c, results}, 30_000
        assert results != []
        for {i, result} <- results, do: assert(result == {:ok, {c, i}})
      end
    end

    test "a worker due while a long call runs finishes it before it is stopped" do
      pool =
        start_pool(
          target: @worker,
          size: 1,
          max_calls: 2,
          max_calls_jitter: 0,
          worker_opts: [threads: 2]
        )

      wait_until(fn -> hd(Pool.stats(pool).worker_details).threads == 2 end)
      [old] = os_pids(pool)

      long =
        Task.async(fn -> Snakepit.call(pool, %{method: "sleep", args: [1.0]}, timeout: 30_000) end)

      wait_until(fn -> Pool.stats(pool).inflight == 1 end)
      assert {:ok, _} = Snakepit.call(pool, %{method: "echo", args: [1]})
      assert {:ok, _} = Snakepit.call(pool, %{method: "echo", args: [2]})

      # the old worker drains while its replacement serves
      wait_until(fn -> Pool.stats(pool).draining == 1 end)
      assert {:ok, new} = whoami(pool)
      assert new != old
      assert {:ok, ^old} = Task.await(long, 30_000)
      assert_os_pid_exited(old)
    end
  end

  describe "max_age" do
    test "a worker older than max_age is replaced while calls keep succeeding" do
      pool = start_pool(target: @worker, size: 1, max_age: 300, max_age_jitter: 0)
      [old] = os_pids(pool)

      wait_until(fn ->
        assert {:ok, _} = whoami(pool)
        Pool.stats(pool).recycled >= 1 and os_pids(pool) != [old]
      end)

      assert_os_pid_exited(old)
    end
  end

  describe "max_memory_mb" do
    test "a worker whose Python process grows past max_memory_mb is replaced" do
      pool = start_pool(target: @worker, size: 1, max_memory_mb: 150, health_interval: 100)

      [old] = os_pids(pool)
      assert {:ok, _} = Snakepit.call(pool, %{method: "hog", args: [200]}, timeout: 30_000)

      wait_until(fn ->
        match?([%{due: :max_memory}], Pool.stats(pool).worker_details) or os_pids(pool) != [old]
      end)

      wait_until(fn -> os_pids(pool) != [old] end)
      assert_os_pid_exited(old)
      wait_until(fn -> length(Pool.stats(pool).worker_details) == 1 end)
      assert Pool.stats(pool).recycled == 1
      assert {:ok, _} = whoami(pool)
      # the fresh process is small: it is not replaced again
      assert [%{due: nil}] = Pool.stats(pool).worker_details
    end
  end

  describe "reload/2" do
    @tag :tmp_dir
    test "replaces every worker one at a time with the new code; no call fails", %{tmp_dir: dir} do
      file = Path.join(dir, "versioned.py")
      write_version(file, 1)
      pool = start_pool(target: file, size: 2)
      first = os_pids(pool)
      assert {:ok, 1} = Snakepit.call(pool, %{method: "version"})

      write_version(file, 2)
      watcher = watch_ready(pool)
      test = self()

      caller =
        spawn_link(fn ->
          loop = fn loop, acc ->
            receive do
              :stop -> send(test, {:results, acc})
            after
              0 -> loop.(loop, [Snakepit.call(pool, %{method: "version"}, timeout: 30_000) | acc])
            end
          end

          loop.(loop, [])
        end)

      assert :ok = Pool.reload(pool, 60_000)
      send(caller, :stop)
      assert_receive {:results, results}, 30_000
      assert lowest_ready(watcher) >= 2

      assert Enum.all?(results, &match?({:ok, v} when v in [1, 2], &1))
      assert %{reload: %{in_progress: false, done: 2, total: 2}} = Pool.stats(pool)
      assert {:ok, 2} = Snakepit.call(pool, %{method: "version"})
      for pid <- first, do: assert_os_pid_exited(pid)
      assert MapSet.disjoint?(MapSet.new(first), MapSet.new(os_pids(pool)))
    end

    test "stats shows progress while it runs" do
      pool = start_pool(target: @worker, size: 2, events: self())
      # one worker busy: the reload cannot finish before its call does
      long =
        Task.async(fn -> Snakepit.call(pool, %{method: "sleep", args: [1.0]}, timeout: 30_000) end)

      wait_until(fn -> Pool.stats(pool).inflight == 1 end)
      reload = Task.async(fn -> Pool.reload(pool, 60_000) end)
      wait_until(fn -> match?(%{reload: %{in_progress: true, total: 2}}, Pool.stats(pool)) end)
      assert {:ok, _} = Task.await(long, 30_000)
      assert :ok = Task.await(reload, 60_000)
      assert_receive {:snakepit_pool, ^pool, {:reload, :done, 2}}
    end
  end

  test "recycling logs nothing above info" do
    pool = start_pool(target: @worker, size: 1, max_calls: 1, max_calls_jitter: 0)

    log =
      capture_log([level: :warning], fn ->
        call_until(pool, fn -> Pool.stats(pool).recycled >= 2 end)
      end)

    assert log == ""
  end

  defp write_version(file, n) do
    File.write!(file, """
    import snakepit_py as snakepit

    @snakepit.method
    def version():
        return #{n}
    """)
  end
end
