defmodule Snakepit.PoolCapacityTest do
  # A worker gets as many calls at once as it says it can take: `threads` sync
  # calls, up to `max_inflight` async ones. Real pools of real Python workers;
  # no test measures time: "at once" is shown by calls in flight together.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Snakepit.TestHelpers
  alias Snakepit.{Error, Pool, Worker}

  # tests/workers/basic.py has async methods (the ExUnit fixture has none)
  @async_worker Path.expand("../../../tests/workers/basic.py", __DIR__)

  # Starts a pool and waits until every worker's capacity is known (its
  # catalogue arrives just after :ready): `max_inflight` 64 is the Python default.
  defp start_capacity_pool(opts) do
    pool = start_pool(opts)

    wait_until(fn ->
      Enum.all?(Pool.stats(pool).worker_details, &(&1.max_inflight == 64))
    end)

    pool
  end

  defp the_worker(pool), do: hd(Pool.stats(pool).worker_details)

  defp call_async(pool, method, args, opts) do
    Task.async(fn -> Snakepit.call(pool, %{method: method, args: args}, opts) end)
  end

  describe "sync calls" do
    test "a worker with threads: 2 runs two sync calls at once" do
      pool = start_capacity_pool(size: 1, worker_opts: [threads: 2])
      assert %{threads: 2, inflight: 0, status: :idle} = the_worker(pool)

      calls = for _ <- 1..2, do: call_async(pool, "block", [1.0], timeout: 30_000)
      wait_until(fn -> Pool.stats(pool).inflight == 2 end)
      assert %{queue_depth: 0, busy: 1} = Pool.stats(pool)
      assert %{inflight: 2, status: :busy} = the_worker(pool)

      # both run in Python: every sync slot is taken
      [w] = Pool.workers(pool)

      wait_until(fn ->
        match?({:ok, %{status: :busy, inflight: 2}}, Worker.health_check(w))
      end)

      # a third waits in the pool, not inside the worker
      third = call_async(pool, "echo", [3], timeout: 30_000)
      wait_until(fn -> Pool.stats(pool).queue_depth == 1 end)
      assert Worker.info(w).inflight == 2

      assert Enum.map(calls, &Task.await(&1, 30_000)) == [{:ok, "woke"}, {:ok, "woke"}]
      assert {:ok, 3} = Task.await(third, 30_000)
      assert %{inflight: 0, busy: 0, queue_depth: 0, served: 3} = Pool.stats(pool)
    end

    test "a --threads 1 worker never holds two sync calls; the second goes to an idle worker" do
      pool = start_capacity_pool(size: 2)
      long = call_async(pool, "sleep", [60], timeout: 60_000)
      wait_until(fn -> Pool.stats(pool).busy == 1 end)
      %{os_pid: busy_pid} = Enum.find(Pool.stats(pool).worker_details, &(&1.status == :busy))

      # answered by the other worker while the long call still runs
      assert {:ok, pid} = Snakepit.call(pool, %{method: "whoami"})
      assert pid != busy_pid
      assert Task.yield(long, 0) == nil

      # both busy: the next sync call waits in the pool
      other = call_async(pool, "sleep", [60], timeout: 60_000)
      wait_until(fn -> Pool.stats(pool).busy == 2 end)
      queued = call_async(pool, "echo", [1], timeout: 60_000)
      wait_until(fn -> Pool.stats(pool).queue_depth == 1 end)

      for w <- Pool.workers(pool), do: assert(Worker.info(w).inflight == 1)
      assert Enum.all?(Pool.stats(pool).worker_details, &(&1.inflight == 1))

      # the caller gives up on one long call: its worker takes the queued one
      Task.shutdown(long, :brutal_kill)
      assert {:ok, 1} = Task.await(queued, 30_000)
      Task.shutdown(other, :brutal_kill)
    end
  end

  describe "pipeline" do
    test "pipeline: 2 lets a --threads 1 worker hold three sync calls, run in order" do
      pool = start_capacity_pool(size: 1, pipeline: 2)
      first = call_async(pool, "block", [0.5], timeout: 30_000)
      wait_until(fn -> Pool.stats(pool).inflight == 1 end)
      rest = for i <- 1..2, do: call_async(pool, "echo", [i], timeout: 30_000)
      wait_until(fn -> Pool.stats(pool).inflight == 3 end)
      assert %{queue_depth: 0} = Pool.stats(pool)
      [w] = Pool.workers(pool)
      assert Worker.info(w).inflight == 3

      # a fourth waits in the pool
      fourth = call_async(pool, "echo", [4], timeout: 30_000)
      wait_until(fn -> Pool.stats(pool).queue_depth == 1 end)

      assert {:ok, "woke"} = Task.await(first, 30_000)
      assert Enum.map(rest ++ [fourth], &Task.await(&1, 30_000)) == [{:ok, 1}, {:ok, 2}, {:ok, 4}]
    end

    test "is validated" do
      for bad <- [-1, 1.5, :x] do
        assert_raise ArgumentError, ~r/:pipeline must be a non-negative integer, got: /, fn ->
          Pool.start_link(name: unique_name(), target: test_worker(), pipeline: bad)
        end
      end
    end
  end

  describe "async calls" do
    test "a --threads 1 worker takes async calls while it runs a sync one" do
      pool = start_capacity_pool(size: 1, target: @async_worker)
      sync = call_async(pool, "busy", [0.5], timeout: 30_000)
      wait_until(fn -> Pool.stats(pool).inflight == 1 end)

      naps = for _ <- 1..3, do: call_async(pool, "async_sleep", [0.5], timeout: 30_000)
      wait_until(fn -> Pool.stats(pool).inflight == 4 end)
      assert %{queue_depth: 0} = Pool.stats(pool)

      # a second sync call waits for the thread
      queued = call_async(pool, "add", [1, 2], timeout: 30_000)
      wait_until(fn -> Pool.stats(pool).queue_depth == 1 end)

      assert Enum.map(naps, &Task.await(&1, 30_000)) == List.duplicate({:ok, "async slept"}, 3)
      assert {:ok, _} = Task.await(sync, 30_000)
      assert {:ok, 3} = Task.await(queued, 30_000)
    end

    test "async calls spread over the workers, fewest in flight first" do
      pool = start_capacity_pool(size: 2, target: @async_worker)
      naps = for _ <- 1..6, do: call_async(pool, "async_sleep", [30], timeout: 60_000)
      wait_until(fn -> Pool.stats(pool).inflight == 6 end)
      assert Enum.map(Pool.stats(pool).worker_details, & &1.inflight) == [3, 3]
      Enum.each(naps, &Task.shutdown(&1, :brutal_kill))
      wait_until(fn -> Pool.stats(pool).inflight == 0 end)
    end
  end

  describe "failures with several calls in flight" do
    test "kill -9 with 3 calls in flight: each gets exactly one :worker_crashed; a queued one runs on the replacement" do
      pool = start_capacity_pool(size: 1, worker_opts: [threads: 3])
      %{os_pid: old} = the_worker(pool)

      victims =
        for _ <- 1..3 do
          Task.async(fn ->
            reply = Snakepit.call(pool, %{method: "block", args: [60]}, timeout: 60_000)
            # no second answer may follow
            Process.sleep(200)
            {:messages, left_over} = Process.info(self(), :messages)
            {reply, left_over}
          end)
        end

      wait_until(fn -> Pool.stats(pool).inflight == 3 end)
      queued = call_async(pool, "whoami", [], timeout: 60_000)
      wait_until(fn -> Pool.stats(pool).queue_depth == 1 end)

      capture_log(fn ->
        kill9(old)

        for victim <- victims do
          assert {{:error, %Error{kind: :worker_crashed}}, []} = Task.await(victim, 30_000)
        end

        assert {:ok, new} = Task.await(queued, 30_000)
        assert new != old
      end)

      assert_os_pid_exited(old)
      stats = Pool.stats(pool)
      assert %{inflight: 0, queue_depth: 0, restarts: 1} = stats

      # the replacement takes three at once again
      wait_until(fn -> the_worker(pool).threads == 3 end)
      calls = for _ <- 1..3, do: call_async(pool, "block", [0.2], timeout: 30_000)
      assert Enum.map(calls, &Task.await(&1, 30_000)) == List.duplicate({:ok, "woke"}, 3)
    end

    test "a cancelled call frees its slot while the other call on the worker runs on" do
      pool = start_capacity_pool(size: 1, worker_opts: [threads: 2])
      long = call_async(pool, "sleep", [60], timeout: 60_000)
      wait_until(fn -> Pool.stats(pool).inflight == 1 end)

      assert {:error, %Error{kind: :timeout}} =
               Snakepit.call(pool, %{method: "sleep", args: [60]}, timeout: 100)

      # the cancelled call ends in Python and checks in: the slot is free again
      wait_until(fn -> Pool.stats(pool).inflight == 1 end)
      assert {:ok, 7} = Snakepit.call(pool, %{method: "echo", args: [7]})
      assert Task.yield(long, 0) == nil
      Task.shutdown(long, :brutal_kill)
    end

    test "a hung worker with 2 calls in flight: both get :worker_hung" do
      pool = start_capacity_pool(size: 1, worker_opts: [threads: 2], health_interval: 100)
      %{os_pid: old} = the_worker(pool)
      calls = for _ <- 1..2, do: call_async(pool, "block", [60], timeout: 60_000)
      wait_until(fn -> Pool.stats(pool).inflight == 2 end)

      capture_log(fn ->
        Snakepit.OSProcess.signal(old, "STOP")

        for call <- calls,
            do: assert({:error, %Error{kind: :worker_hung}} = Task.await(call, 30_000))

        assert_os_pid_exited(old)
      end)

      wait_until(fn -> Pool.stats(pool).ready == 1 end)
      assert %{inflight: 0} = Pool.stats(pool)
      assert {:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]})
    end
  end

  describe "affinity" do
    test "a holder with a free thread takes its key's call at once; a full one makes it wait" do
      pool = start_capacity_pool(size: 2, worker_opts: [threads: 2])
      {:ok, _} = Snakepit.call(pool, %{method: "load_model", args: ["m"]})

      holder =
        wait_until(fn ->
          Enum.find(Pool.stats(pool).worker_details, &(&1.loaded_models == ["m"]))
        end)

      first = call_async(pool, "sleep", [60], affinity: "m", timeout: 60_000)
      wait_until(fn -> Pool.stats(pool).inflight == 1 end)

      # one thread left on the holder: it runs the next "m" call beside the first
      assert {:ok, %{"loaded" => true, "pid" => pid}} =
               Snakepit.call(pool, %{method: "has_model", args: ["m"]}, affinity: "m")

      assert pid == holder.os_pid

      # both threads taken: an "m" call waits for the holder, though the other worker is idle
      second = call_async(pool, "sleep", [60], affinity: "m", timeout: 60_000)
      wait_until(fn -> Pool.stats(pool).inflight == 2 end)
      waiting = call_async(pool, "has_model", ["m"], affinity: "m", timeout: 60_000)
      wait_until(fn -> Pool.stats(pool).queue_depth == 1 end)
      assert %{idle: 1} = Pool.stats(pool)

      Task.shutdown(first, :brutal_kill)
      assert {:ok, %{"loaded" => true, "pid" => ^pid}} = Task.await(waiting, 30_000)
      Task.shutdown(second, :brutal_kill)
    end
  end
end
