defmodule Snakepit.PoolTest do
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Snakepit.TestHelpers
  alias Snakepit.{Error, Pool, Worker}

  describe "start_link/1" do
    test "starts `size` ready workers, each its own OS process" do
      pool = start_pool(size: 3)
      stats = Pool.stats(pool)
      assert %{workers: 3, ready: 3, idle: 3, busy: 0, queue_depth: 0, restarts: 0} = stats
      pids = os_pids(pool)
      assert length(Enum.uniq(pids)) == 3
      assert Enum.all?(pids, &Snakepit.OSProcess.alive?/1)
      assert Enum.map(stats.worker_details, & &1.worker_id) |> Enum.all?(&(&1 =~ "#{pool}-"))
    end

    test "fails with :start_failed when the workers cannot start" do
      capture_log(fn ->
        assert {:error, %Error{kind: :start_failed} = error} =
                 Pool.start_link(
                   name: unique_name(),
                   target: fixture("broken_worker.py"),
                   size: 2
                 )

        assert error.message =~ "fixture failed to import on purpose"
      end)
    end

    test "validates options" do
      assert_raise ArgumentError, ~r/:size must be a positive integer, got: 0/, fn ->
        Pool.start_link(name: :x, target: "w.py", size: 0)
      end

      assert_raise ArgumentError, ~r/:name must be an atom/, fn ->
        Pool.start_link(name: "x", target: "w.py")
      end
    end
  end

  describe "call/3 through a pool" do
    test "1000 calls from 50 concurrent callers over 4 workers are each answered exactly once" do
      pool = start_pool(size: 4)

      results =
        1..50
        |> Enum.map(fn caller ->
          Task.async(fn ->
            replies =
              for i <- 1..20 do
                {:ok, reply} =
                  Snakepit.call(pool, %{method: "echo", args: [{caller, i}]}, timeout: 60_000)

                reply
              end

            # no stray or duplicate replies left over in the mailbox
            {:messages, left_over} = Process.info(self(), :messages)
            {caller, replies, left_over}
          end)
        end)
        |> Task.await_many(120_000)

      for {caller, replies, left_over} <- results do
        assert replies == for(i <- 1..20, do: {caller, i})
        assert left_over == []
      end

      stats = Pool.stats(pool)
      assert stats.served == 1000
      assert %{busy: 0, queue_depth: 0} = stats
      # every worker took part
      assert Enum.all?(stats.worker_details, &(&1.served > 0))
    end

    test "calls queue (FIFO) while every worker is busy; stats show the queue" do
      pool = start_pool(size: 2)
      blockers = for _ <- 1..2, do: Task.async(fn -> call_block(pool, 0.5) end)
      wait_until(fn -> Pool.stats(pool).busy == 2 end)

      queued =
        for i <- 1..3 do
          task = Task.async(fn -> Snakepit.call(pool, %{method: "echo", args: [i]}) end)
          wait_until(fn -> Pool.stats(pool).queue_depth == i end)
          task
        end

      assert %{busy: 2, idle: 0, queue_depth: 3} = Pool.stats(pool)
      assert Enum.map(queued, &Task.await/1) == [{:ok, 1}, {:ok, 2}, {:ok, 3}]
      assert Enum.map(blockers, &Task.await/1) == [{:ok, "woke"}, {:ok, "woke"}]
      stats = Pool.stats(pool)
      assert stats.queue_depth == 0
      assert stats.avg_queue_time_ms > 0
    end

    test "a caller that times out while queued is removed from the queue" do
      pool = start_pool(size: 1)
      blocker = Task.async(fn -> call_block(pool, 0.5) end)
      wait_until(fn -> Pool.stats(pool).busy == 1 end)

      assert {:error, %Error{kind: :timeout}} =
               Snakepit.call(pool, %{method: "echo", args: [1]}, timeout: 50)

      wait_until(fn -> Pool.stats(pool).queue_depth == 0 end)
      assert {:ok, "woke"} = Task.await(blocker)
      assert {:ok, 2} = Snakepit.call(pool, %{method: "echo", args: [2]})
    end

    test "a call whose caller died while queued is never run" do
      pool = start_pool(size: 1)
      blocker = Task.async(fn -> call_block(pool, 0.5) end)
      wait_until(fn -> Pool.stats(pool).busy == 1 end)

      ghost = spawn(fn -> Snakepit.call(pool, %{method: "load_model", args: ["ghost"]}) end)
      wait_until(fn -> Pool.stats(pool).queue_depth == 1 end)
      Process.exit(ghost, :kill)

      assert {:ok, "woke"} = Task.await(blocker)
      # one worker, FIFO: had the ghost call run, it would have run before this one
      assert {:ok, %{"loaded" => false}} =
               Snakepit.call(pool, %{method: "has_model", args: ["ghost"]})
    end
  end

  describe "crashes" do
    test "kill -9 mid-call: that caller gets :worker_crashed, others are untouched, the replacement answers" do
      pool = start_pool(size: 3)
      victim = Task.async(fn -> call_block(pool, 60, 60_000) end)
      wait_until(fn -> Pool.stats(pool).busy == 1 end)

      %{os_pid: victim_pid, worker_id: victim_id} =
        Enum.find(Pool.stats(pool).worker_details, &(&1.status == :busy))

      others = for _ <- 1..2, do: Task.async(fn -> call_block(pool, 0.5) end)
      wait_until(fn -> Pool.stats(pool).busy == 3 end)

      capture_log(fn ->
        kill9(victim_pid)
        assert {:error, %Error{kind: :worker_crashed}} = Task.await(victim)
      end)

      assert Enum.map(others, &Task.await/1) == [{:ok, "woke"}, {:ok, "woke"}]
      assert_os_pid_exited(victim_pid)

      wait_until(fn -> Pool.stats(pool).ready == 3 end)
      assert %{restarts: 1} = Pool.stats(pool)
      refute victim_pid in os_pids(pool)

      # the replacement answers, directly and through the pool
      %{os_pid: replacement} =
        Enum.find(Pool.stats(pool).worker_details, &(&1.worker_id == victim_id))

      w = worker_with_os_pid(pool, replacement)
      assert {:ok, ^replacement} = Worker.call(w, %{method: "whoami"})

      for _ <- 1..6, do: assert({:ok, _} = Snakepit.call(pool, %{method: "whoami"}))
    end

    test "a worker that keeps crashing is restarted each time" do
      pool = start_pool(size: 1)

      capture_log(fn ->
        for n <- 1..3 do
          assert {:error, %Error{kind: :worker_crashed}} =
                   Snakepit.call(pool, %{method: "crash"}, timeout: 30_000)

          wait_until(fn -> Pool.stats(pool).restarts == n and Pool.stats(pool).ready == 1 end)
        end
      end)

      assert {:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]}, timeout: 30_000)
    end
  end

  describe "affinity" do
    test "calls go to the worker that loaded the key; after it dies they fall back" do
      pool = start_pool(size: 3)
      assert {:ok, ["m1"]} = Snakepit.call(pool, %{method: "load_model", args: ["m1"]})

      # the pushed "loaded_models" event reaches the routing table
      holder =
        wait_until(fn ->
          Enum.find(Pool.stats(pool).worker_details, &(&1.loaded_models == ["m1"]))
        end)

      for _ <- 1..9 do
        assert {:ok, %{"loaded" => true, "pid" => pid}} =
                 Snakepit.call(pool, %{method: "has_model", args: ["m1"]}, affinity: "m1")

        assert pid == holder.os_pid
      end

      capture_log(fn ->
        kill9(holder.os_pid)
        wait_until(fn -> Pool.stats(pool).restarts == 1 end)
      end)

      # nobody has m1 now: any worker takes the call
      for _ <- 1..6 do
        assert {:ok, %{"loaded" => false, "pid" => pid}} =
                 Snakepit.call(pool, %{method: "has_model", args: ["m1"]},
                   affinity: "m1",
                   timeout: 10_000
                 )

        assert pid != holder.os_pid
      end
    end

    test "an affinity call waits for its busy worker rather than going elsewhere" do
      pool = start_pool(size: 2)
      {:ok, _} = Snakepit.call(pool, %{method: "load_model", args: ["m2"]})

      holder =
        wait_until(fn ->
          Enum.find(Pool.stats(pool).worker_details, &(&1.loaded_models == ["m2"]))
        end)

      w = worker_with_os_pid(pool, holder.os_pid)
      # make the holder busy through its own affinity
      blocker =
        Task.async(fn ->
          Snakepit.call(pool, %{method: "block", args: [0.5]}, affinity: "m2")
        end)

      wait_until(fn -> Worker.info(w).inflight == 1 end)

      assert {:ok, %{"loaded" => true, "pid" => pid}} =
               Snakepit.call(pool, %{method: "has_model", args: ["m2"]}, affinity: "m2")

      assert pid == holder.os_pid
      assert {:ok, "woke"} = Task.await(blocker)
    end

    test "health polls fill the routing table too" do
      # (frequent polls; a loaded machine must not make a slow answer a hang)
      pool = start_pool(size: 2, health_interval: 100, hung_after: 50)
      # load_quietly pushes no event: only the poll can tell the pool
      {:ok, _} = Snakepit.call(pool, %{method: "load_quietly", args: ["m3"]})

      holder =
        wait_until(fn ->
          Enum.find(Pool.stats(pool).worker_details, &(&1.loaded_models == ["m3"]))
        end)

      assert {:ok, %{"loaded" => true, "pid" => pid}} =
               Snakepit.call(pool, %{method: "has_model", args: ["m3"]}, affinity: "m3")

      assert pid == holder.os_pid
    end
  end

  describe "stop/1" do
    test "stopping the pool leaves no Python process alive" do
      name = unique_name()
      {:ok, _sup} = Pool.start_link(name: name, target: test_worker(), size: 3)
      pids = os_pids(name)
      assert :ok = Pool.stop(name)
      Enum.each(pids, &assert_os_pid_exited/1)
    end

    test "killing the process that owns the pool leaves no Python process alive" do
      test = self()
      name = unique_name()

      owner =
        spawn(fn ->
          {:ok, _} = Pool.start_link(name: name, target: test_worker(), size: 3)
          send(test, {:pids, os_pids(name)})
          Process.sleep(:infinity)
        end)

      assert_receive {:pids, pids}, 20_000

      capture_log(fn ->
        Process.exit(owner, :kill)
        Enum.each(pids, &assert_os_pid_exited/1)
        wait_until(fn -> Process.whereis(name) == nil end)
      end)
    end

    test "stopping a pool with a call in flight answers the caller" do
      name = unique_name()

      {:ok, _sup} =
        Pool.start_link(name: name, target: test_worker(), size: 1, shutdown_grace: 100)

      pids = os_pids(name)
      task = Task.async(fn -> call_block(name, 600, :infinity) end)
      wait_until(fn -> Pool.stats(name).busy == 1 end)
      capture_log(fn -> Pool.stop(name) end)
      assert {:error, %Error{}} = Task.await(task)
      Enum.each(pids, &assert_os_pid_exited/1)
    end
  end

  defp call_block(pool, seconds, timeout \\ 10_000) do
    Snakepit.call(pool, %{method: "block", args: [seconds]}, timeout: timeout)
  end
end
