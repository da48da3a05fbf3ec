defmodule Snakepit.RecoveryTest do
  # Every call gets its one terminal and every worker comes back, whatever
  # happens to the Python process: hangs, ignored cancels, ports that end
  # without an exit status, crashes, crash loops.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Snakepit.TestHelpers
  alias Snakepit.{Error, Pool, Stream, Worker}

  defp start_worker(opts \\ []) do
    opts = Keyword.merge([target: test_worker(), worker_id: "rec"], opts)
    start_supervised!({Worker, opts})
  end

  # A stream callback that reports every event to the test, tagged.
  defp forward(tag, test \\ self()), do: fn event -> send(test, {:event, tag, event}) end

  defp the_worker(pool), do: hd(Pool.stats(pool).worker_details)

  defp sigstop(os_pid), do: Snakepit.OSProcess.signal(os_pid, "STOP")

  describe "hung workers" do
    test "a worker stopped (SIGSTOP) with a stream open is killed and replaced; the stream ends with :worker_hung" do
      pool = start_pool(size: 1, health_interval: 200)
      %{os_pid: old} = the_worker(pool)
      {:ok, child} = Snakepit.call(pool, %{method: "spawn_child"})

      {:ok, _ref} = Stream.open(pool, %{method: "count", args: [1_000_000, 0.01]}, forward(:s))
      assert_receive {:event, :s, {:data, 0}}, 10_000

      log =
        capture_log(fn ->
          sigstop(old)
          assert {_chunks, {:error, %Error{kind: :worker_hung} = error}} = collect_stream(:s)
          assert error.message =~ "health polls"
          assert_os_pid_exited(old)
        end)

      assert log =~ "health polls"
      # what it had spawned went with it
      assert_os_pid_exited(child)

      wait_until(fn -> Pool.stats(pool).ready == 1 end)
      assert {:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]})
      refute the_worker(pool).os_pid == old
      refute_received {:event, :s, _}
    end

    test "a busy worker that keeps answering its polls is left alone" do
      # polls every 100 ms; a hang would take a whole second of silence
      w = start_worker(health_interval: 100, hung_after: 10)
      assert {:ok, "woke"} = Worker.call(w, %{method: "block", args: [2.0]})
      assert Worker.info(w).restarts == 0
    end

    test "the options are validated" do
      for {key, bad} <- [
            hung_after: 0,
            health_interval: 0,
            stable_after: -1,
            cancel_grace: :never
          ] do
        assert_raise ArgumentError, ~r/#{key} must be .*got: #{inspect(bad)}/, fn ->
          Worker.start_link([{:target, test_worker()}, {key, bad}])
        end
      end

      assert_raise ArgumentError, ~r/:hung_after must be a positive integer/, fn ->
        Pool.start_link(name: unique_name(), target: test_worker(), hung_after: 0)
      end
    end
  end

  describe "cancel_grace (the last step of the cancel ladder)" do
    test "a cancelled stream stuck in C code gets :cancelled, and nothing else, once the grace runs out" do
      pool = start_pool(size: 1, cancel_grace: 300)
      %{os_pid: old} = the_worker(pool)

      {:ok, ref} = Stream.open(pool, %{method: "stuck_stream"}, forward(:s))
      assert_receive {:event, :s, {:data, "started"}}, 10_000

      capture_log(fn ->
        :ok = Stream.cancel(ref)

        assert {[], {:error, %Error{kind: :cancelled, details: %{reason: "killed"}}}} =
                 collect_stream(:s)

        assert_os_pid_exited(old)
      end)

      assert {:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]}, timeout: 10_000)
      refute_received {:event, :s, _}
    end

    test "a call that swallows its cancel: its caller's :timeout is its only reply; calls waiting in the pool are served" do
      pool = start_pool(size: 1, cancel_grace: 300)
      %{os_pid: old} = the_worker(pool)

      stubborn =
        Task.async(fn ->
          reply = Snakepit.call(pool, %{method: "stubborn"}, timeout: 300)
          # nothing may arrive after the one reply (the kill comes later)
          stray =
            receive do
              msg -> msg
            after
              1_000 -> :none
            end

          {reply, stray}
        end)

      wait_until(fn -> Pool.stats(pool).busy == 1 end)

      waiting =
        Task.async(fn -> Snakepit.call(pool, %{method: "add", args: [1, 2]}, timeout: 30_000) end)

      capture_log(fn ->
        assert {{:error, %Error{kind: :timeout}}, :none} = Task.await(stubborn, 20_000)
        assert {:ok, 3} = Task.await(waiting, 30_000)
        assert_os_pid_exited(old)
      end)
    end

    test "on a lone worker, a call queued in Python behind the stuck one is answered when it is killed" do
      w = start_worker(cancel_grace: 300)
      old = Worker.info(w).os_pid
      stubborn = Task.async(fn -> Worker.call(w, %{method: "stubborn"}, timeout: 300) end)
      wait_until(fn -> Worker.info(w).inflight == 1 end)

      behind =
        Task.async(fn -> Worker.call(w, %{method: "add", args: [1, 2]}, timeout: 30_000) end)

      wait_until(fn -> Worker.info(w).inflight == 2 end)

      capture_log(fn ->
        assert {:error, %Error{kind: :timeout}} = Task.await(stubborn, 20_000)

        assert {:error, %Error{kind: :worker_crashed} = error} = Task.await(behind, 30_000)
        assert is_integer(error.details.killed_for)
        assert error.message =~ "did not end within 300 ms of its cancel"
        assert_os_pid_exited(old)
      end)

      wait_until(fn -> Worker.info(w).status == :ready end)
      assert {:ok, 3} = Worker.call(w, %{method: "add", args: [1, 2]})
    end
  end

  describe "a port that ends without an exit status" do
    test "a port closed with :epipe fails the calls at once, its process is killed, the worker restarts" do
      w = start_worker()
      old = Worker.info(w).os_pid
      assert {:ok, "dropped"} = Worker.call(w, %{method: "drop_input"})

      capture_log(fn ->
        # Python no longer reads its input: one of these writes fails with
        # EPIPE; every call still gets an answer, none times out.
        replies =
          for i <- 1..3 do
            Worker.call(w, %{method: "echo", args: [i]}, timeout: 15_000)
          end

        for reply <- replies do
          assert match?({:ok, _}, reply) or
                   match?({:error, %Error{kind: :worker_crashed}}, reply),
                 "unexpected reply #{inspect(reply)}"
        end

        assert Enum.any?(replies, &match?({:error, %Error{kind: :worker_crashed}}, &1))
        assert_os_pid_exited(old)
        wait_until(fn -> Worker.info(w).status == :ready end)
      end)

      assert Worker.info(w).restarts == 1
      assert {:ok, 3} = Worker.call(w, %{method: "add", args: [1, 2]})
    end

    test "kill -9 every 300 ms under a steady stream of calls: every call is answered, every worker comes back" do
      pool = start_pool(size: 2)
      test = self()

      callers =
        for c <- 1..4 do
          spawn_link(fn -> call_until_stopped(pool, test, c, 0, []) end)
        end

      kills = 10

      capture_log(fn ->
        Enum.reduce(1..kills, [], fn _, killed ->
          Process.sleep(300)

          # a live worker the pool knows is up (not one whose death it has yet to hear of)
          %{os_pid: victim} =
            wait_until(fn ->
              Enum.find(Pool.stats(pool).worker_details, fn w ->
                w.status != :down and w.os_pid not in killed
              end)
            end)

          kill9(victim)
          assert_os_pid_exited(victim)
          [victim | killed]
        end)

        for pid <- callers, do: send(pid, :stop)

        for pid <- callers do
          assert_receive {:done, ^pid, n, bad}, 60_000
          assert bad == [], "unexpected replies: #{inspect(bad)}"
          assert n > 0
        end

        wait_until(fn -> Pool.stats(pool).ready == 2 end, 20_000)
      end)

      wait_until(fn -> Pool.stats(pool).restarts == kills end)
      for _ <- 1..4, do: assert({:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]}))
    end
  end

  defp call_until_stopped(pool, test, c, n, bad) do
    receive do
      :stop -> send(test, {:done, self(), n, bad})
    after
      0 ->
        bad =
          case Snakepit.call(pool, %{method: "echo", args: [{c, n}]}, timeout: 30_000) do
            {:ok, {^c, ^n}} -> bad
            {:error, %Error{kind: :worker_crashed}} -> bad
            other -> [other | bad]
          end

        call_until_stopped(pool, test, c, n + 1, bad)
    end
  end

  describe "restarts" do
    test "a worker killed once it has been up a while comes back at once, every time" do
      w = start_worker()

      capture_log(fn ->
        for n <- 1..4 do
          wait_until(fn -> Worker.info(w).status == :ready end)
          # up longer than :stable_after (500 ms): not a crash loop
          Process.sleep(600)
          kill9(Worker.info(w).os_pid)
          wait_until(fn -> Worker.info(w).restarts == n end)
          assert Worker.info(w).backoff_ms == 0
        end
      end)

      wait_until(fn -> Worker.info(w).status == :ready end)
    end

    test "a crash loop (crashes soon after :ready) backs off: 0, 200, 400 ms" do
      w = start_worker(stable_after: 5_000)

      {delays, _log} =
        with_log(fn ->
          for n <- 1..3 do
            wait_until(fn -> Worker.info(w).status == :ready end)

            assert {:error, %Error{kind: :worker_crashed}} =
                     Worker.call(w, %{method: "crash"}, timeout: 30_000)

            wait_until(fn -> Worker.info(w).restarts == n end)
            Worker.info(w).backoff_ms
          end
        end)

      assert delays == [0, 200, 400]
    end
  end

  describe "crash reports" do
    test "a segfault's last output lines are in the :worker_crashed message and the log" do
      w = start_worker()

      log =
        capture_log(fn ->
          assert {:error, %Error{kind: :worker_crashed} = error} =
                   Worker.call(w, %{method: "segfault", args: ["last words 4711"]})

          assert error.message =~ "killed by signal 11"
          assert error.message =~ "last words 4711"
          assert error.details.output_tail =~ "last words 4711"
        end)

      assert log =~ "last words 4711"
    end
  end

  describe "no OS process left behind" do
    test "stopping the pool leaves no worker, guard or child process" do
      name = unique_name()
      {:ok, _sup} = Pool.start_link(name: name, target: test_worker(), size: 3)

      children =
        for w <- Pool.workers(name) do
          {:ok, child} = Worker.call(w, %{method: "spawn_child"})
          child
        end

      pids = all_os_pids(name)
      assert :ok = Pool.stop(name)
      Enum.each(pids ++ children, &assert_os_pid_exited/1)
    end

    @tag :needs_guard
    test "a worker killed with SIGKILL leaves no child behind (its guard sweeps)" do
      w = start_worker()
      %{os_pid: old, guard_pid: guard} = Worker.info(w)
      assert is_integer(guard)
      {:ok, child} = Worker.call(w, %{method: "spawn_child"})

      capture_log(fn ->
        kill9(old)
        Enum.each([old, guard, child], &assert_os_pid_exited/1)
        wait_until(fn -> Worker.info(w).status == :ready end)
      end)
    end
  end
end
