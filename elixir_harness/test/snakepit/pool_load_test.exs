defmodule Snakepit.PoolLoadTest do
  # Load shedding with real Python workers: a bounded queue (`:max_queue`),
  # `:queue_timeout`, and a queued caller that dies leaving the queue.
  use ExUnit.Case, async: false

  import Snakepit.TestHelpers
  alias Snakepit.{Error, Pool}

  @worker Path.expand("../fixtures/pool_worker.py", __DIR__)

  defp call_async(pool, method, args, opts \\ [timeout: 30_000]) do
    Task.async(fn -> Snakepit.call(pool, %{method: method, args: args}, opts) end)
  end

  # One worker, kept busy by a cancellable sleep.
  defp busy_pool(opts) do
    pool = start_pool([target: @worker, size: 1] ++ opts)
    long = call_async(pool, "sleep", [30])
    wait_until(fn -> Pool.stats(pool).inflight == 1 end)
    {pool, long}
  end

  describe "max_queue" do
    test "a call that finds the queue full gets :overloaded at once, with the depth" do
      {pool, long} = busy_pool(max_queue: 2)
      queued = for i <- 1..2, do: call_async(pool, "echo", [i])
      wait_until(fn -> Pool.stats(pool).queue_depth == 2 end)

      assert {:error, %Error{kind: :overloaded, details: details}} =
               Snakepit.call(pool, %{method: "echo", args: [3]})

      assert details == %{queue_depth: 2, max_queue: 2}
      assert %{shed: 1, queue_depth: 2, max_queue: 2} = Pool.stats(pool)

      # the queued calls are served once the worker is free
      Task.shutdown(long, :brutal_kill)
      assert Enum.map(queued, &Task.await(&1, 30_000)) == [{:ok, 1}, {:ok, 2}]
    end

    test "max_queue: 0 refuses every call no worker can take now" do
      {pool, long} = busy_pool(max_queue: 0)

      assert {:error, %Error{kind: :overloaded, details: %{queue_depth: 0}}} =
               Snakepit.call(pool, %{method: "echo", args: [1]})

      Task.shutdown(long, :brutal_kill)
    end

    test "the default is finite (5_000), and :infinity is allowed" do
      pool = start_pool(target: @worker, size: 1)
      assert Pool.stats(pool).max_queue == 5_000
      pool = start_pool(target: @worker, size: 1, max_queue: :infinity)
      assert Pool.stats(pool).max_queue == :infinity
    end
  end

  describe "queue_timeout" do
    test "a call that waits longer than queue_timeout ends with :queue_timeout" do
      {pool, long} = busy_pool(queue_timeout: 200)

      assert {:error, %Error{kind: :queue_timeout, details: %{waited_ms: waited}}} =
               Snakepit.call(pool, %{method: "echo", args: [1]}, timeout: 20_000)

      assert waited >= 200
      assert %{queue_timeouts: 1, queue_depth: 0} = Pool.stats(pool)
      Task.shutdown(long, :brutal_kill)
    end

    test "the caller's own timeout still bounds a queued call" do
      {pool, long} = busy_pool(queue_timeout: 60_000)

      assert {:error, %Error{kind: :timeout}} =
               Snakepit.call(pool, %{method: "echo", args: [1]}, timeout: 200)

      wait_until(fn -> Pool.stats(pool).queue_depth == 0 end)
      Task.shutdown(long, :brutal_kill)
    end

    test "calls dispatched in time are not touched" do
      pool = start_pool(target: @worker, size: 2, queue_timeout: 5_000)
      tasks = for i <- 1..20, do: call_async(pool, "echo", [i])
      assert Enum.map(tasks, &Task.await/1) == Enum.map(1..20, &{:ok, &1})
      assert Pool.stats(pool).queue_timeouts == 0
    end
  end

  describe "a queued caller that dies" do
    test "leaves the queue at once (it no longer counts against max_queue)" do
      {pool, long} = busy_pool(max_queue: 1)
      test = self()

      caller =
        spawn(fn ->
          send(test, :calling)
          Snakepit.call(pool, %{method: "echo", args: [:never]}, timeout: 60_000)
        end)

      assert_receive :calling
      wait_until(fn -> Pool.stats(pool).queue_depth == 1 end)
      mon = Process.monitor(caller)
      Process.exit(caller, :kill)
      assert_receive {:DOWN, ^mon, :process, ^caller, :killed}
      # The pool's monitor fired when ours did, before the stats call below is sent
      assert Pool.stats(pool).queue_depth == 0

      # the slot is free again
      queued = call_async(pool, "echo", [2])
      wait_until(fn -> Pool.stats(pool).queue_depth == 1 end)
      Task.shutdown(long, :brutal_kill)
      assert {:ok, 2} = Task.await(queued, 30_000)
    end
  end

  describe "options" do
    test "are validated" do
      for {opt, bad} <- [
            max_queue: -1,
            queue_timeout: :soon,
            max_calls: 0,
            max_memory_mb: -5,
            scale_down_idle: 0,
            affinity_wait: "x",
            circuit_breaker: [threshold: 0],
            circuit_breaker: [bogus: 1],
            circuit_breaker: :on,
            min_size: 0
          ] do
        assert_raise ArgumentError, ~r/got: /, fn ->
          Pool.start_link([name: unique_name(), target: @worker, size: 1] ++ [{opt, bad}])
        end
      end

      assert_raise ArgumentError, ~r/:min_size <= :size <= :max_size/, fn ->
        Pool.start_link(name: unique_name(), target: @worker, size: 5, max_size: 2)
      end
    end
  end
end
