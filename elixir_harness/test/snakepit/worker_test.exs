defmodule Snakepit.WorkerTest do
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Snakepit.TestHelpers
  alias Snakepit.{Error, Worker}

  # Kill `caller` while its `sleep` runs; with threads=1 the next call is only
  # answered if the sleep was cancelled.
  defp kill_mid_call_then_call(w, caller) do
    wait_until(fn -> Worker.info(w).inflight == 1 end)
    Process.exit(caller, :kill)
    assert {:ok, 3} = Worker.call(w, %{method: "add", args: [1, 2]}, timeout: 20_000)
  end

  defp start_worker(opts \\ []) do
    opts = Keyword.merge([target: test_worker(), worker_id: "solo"], opts)
    start_supervised!({Worker, opts})
  end

  describe "start_link/1" do
    test "returns once Python is ready; info carries the OS pid and methods" do
      w = start_worker()
      info = Worker.info(w)
      assert info.status == :ready
      assert info.worker_id == "solo"
      assert info.ready.protocol == 1
      assert info.ready.pid == info.os_pid
      assert "echo" in info.ready.methods
      assert Snakepit.OSProcess.alive?(info.os_pid)
    end

    test "a worker that cannot import fails with :start_failed quoting its stderr" do
      log =
        capture_log(fn ->
          assert {:error, %Error{kind: :start_failed} = error} =
                   Worker.start_link(target: fixture("broken_worker.py"))

          assert error.message =~ "fixture failed to import on purpose"
          assert Exception.message(error) =~ "before sending :ready"
        end)

      assert log =~ "fixture failed to import on purpose"
    end

    test "a worker that never sends :ready is killed after :start_timeout" do
      capture_log(fn ->
        assert {:error, %Error{kind: :start_failed} = error} =
                 Worker.start_link(target: fixture("slow_import_worker.py"), start_timeout: 300)

        assert error.message =~ "did not send :ready within 300 ms"
        assert_os_pid_exited(error.details.os_pid)
      end)
    end

    test "a missing interpreter fails with :start_failed" do
      capture_log(fn ->
        assert {:error, %Error{kind: :start_failed}} =
                 Worker.start_link(target: test_worker(), python: "/nonexistent/python")
      end)
    end

    test ":worker_args reach the worker's own code after --" do
      w = start_worker(worker_args: ["--model", "gpt2"], worker_opts: [threads: 2])
      assert {:ok, ["--model", "gpt2"]} = Worker.call(w, %{method: "own_args"})
      assert Worker.info(w).ready.threads == 2

      assert_raise ArgumentError, ~r/:worker_args must be a list of strings/, fn ->
        Worker.start_link(target: "x.py", worker_args: [:bad])
      end
    end

    test "options are validated up front" do
      assert_raise ArgumentError, ~r/:target must be/, fn -> Worker.start_link([]) end

      assert_raise ArgumentError, ~r/unknown worker options \[:bogus\]/, fn ->
        Worker.start_link(target: "x.py", bogus: 1)
      end
    end
  end

  describe "call/3" do
    test "calls one worker directly" do
      w = start_worker()
      assert {:ok, 3} = Worker.call(w, %{method: "add", args: [1, 2]})
    end

    test "calls beyond --max-inflight are :overloaded" do
      w = start_worker(worker_opts: [max_inflight: 1])
      slow = Task.async(fn -> Worker.call(w, %{method: "block", args: [0.5]}) end)
      wait_until(fn -> Worker.info(w).inflight == 1 end)

      assert {:error, %Error{kind: :overloaded}} = Worker.call(w, %{method: "add", args: [1, 2]})
      assert {:ok, "woke"} = Task.await(slow)
    end

    test "a frame the BEAM refuses to decode is a :protocol_error; the worker restarts" do
      w = start_worker()
      old = Worker.info(w).os_pid

      capture_log(fn ->
        assert {:error, %Error{kind: :protocol_error}} = Worker.call(w, %{method: "corrupt"})
      end)

      assert_os_pid_exited(old)
      wait_until(fn -> Worker.info(w).status == :ready end)
      assert {:ok, 3} = Worker.call(w, %{method: "add", args: [1, 2]})
      assert Worker.info(w).restarts == 1
    end

    test "kill -9 mid-call: the caller gets :worker_crashed at once, the restart answers" do
      w = start_worker()
      old = Worker.info(w).os_pid
      task = Task.async(fn -> Worker.call(w, %{method: "block", args: [60]}, timeout: 60_000) end)
      wait_until(fn -> Worker.info(w).inflight == 1 end)

      capture_log(fn ->
        kill9(old)
        assert {:error, %Error{kind: :worker_crashed} = error} = Task.await(task)
        assert error.message =~ "killed by signal 9"
      end)

      assert {:ok, new} = Worker.call(w, %{method: "whoami"})
      assert new != old
    end

    test "a caller that dies mid-call gets its call cancelled in Python" do
      w = start_worker()
      caller = spawn(fn -> Worker.call(w, %{method: "sleep", args: [60]}, timeout: 60_000) end)
      kill_mid_call_then_call(w, caller)
    end

    test "a caller that called before and dies mid-call still gets its call cancelled" do
      w = start_worker()
      test = self()

      caller =
        spawn(fn ->
          {:ok, 3} = Worker.call(w, %{method: "add", args: [1, 2]})
          send(test, :first_call_done)
          Worker.call(w, %{method: "sleep", args: [60]}, timeout: 60_000)
        end)

      assert_receive :first_call_done, 5_000
      kill_mid_call_then_call(w, caller)
    end

    test "callers are watched while alive and let go when they exit or are too many" do
      w = start_worker()
      callers = fn -> map_size(:sys.get_state(w).callers) end

      # Given 50 short-lived callers: once they exit, none is watched any more
      for _ <- 1..50 do
        task = Task.async(fn -> Worker.call(w, %{method: "add", args: [1, 2]}) end)
        assert {:ok, 3} = Task.await(task)
      end

      wait_until(fn -> callers.() == 0 end)

      # Given 1 100 live callers that called one after another: the watch list stays bounded
      test = self()

      pids =
        for _ <- 1..1_100 do
          pid =
            spawn(fn ->
              send(test, {self(), Worker.call(w, %{method: "add", args: [1, 2]})})

              receive do
                :stop -> :ok
              end
            end)

          assert_receive {^pid, {:ok, 3}}, 10_000
          pid
        end

      assert callers.() <= 1_024
      Enum.each(pids, &send(&1, :stop))
      wait_until(fn -> callers.() == 0 end)
    end

    test "more live callers than the watch limit, all at once, are all answered" do
      w = start_worker(worker_opts: [max_inflight: 2_000])

      1..1_100
      |> Enum.map(fn _ -> Task.async(fn -> Worker.call(w, %{method: "add", args: [1, 2]}) end) end)
      |> Task.await_many(30_000)
      |> Enum.each(&assert(&1 == {:ok, 3}))
    end

    test "calls sent while Python restarts wait for it" do
      w = start_worker()

      capture_log(fn ->
        kill9(Worker.info(w).os_pid)
        wait_until(fn -> Worker.info(w).restarts == 1 end)
      end)

      assert {:ok, 3} = Worker.call(w, %{method: "add", args: [1, 2]}, timeout: 10_000)
    end
  end

  describe "the frame limit on replies" do
    test "a result over the worker's --max-frame is :unencodable with its size, and nothing breaks" do
      w = start_worker(worker_opts: [max_frame: 1_048_576])

      assert {:error, %Error{kind: :unencodable} = error} =
               Worker.call(w, %{method: "blob", args: [2_000_000]})

      assert error.details.limit == 1_048_576 and error.details.size > 2_000_000
      assert {:ok, blob} = Worker.call(w, %{method: "blob", args: [1000]})
      assert byte_size(blob) == 1000
    end
  end

  describe "health_check/1" do
    test "reports status, counters and the hook's loaded_models" do
      w = start_worker()
      {:ok, _} = Worker.call(w, %{method: "load_model", args: ["m1"]})
      assert {:ok, report} = Worker.health_check(w)
      assert report.status in [:healthy, :busy]
      assert report.worker_id == "solo"
      assert report.pid == Worker.info(w).os_pid
      assert report.loaded_models == ["m1"]
      assert report.extra == %{"fixture" => true}
    end

    test "is answered while a call is running" do
      w = start_worker()
      task = Task.async(fn -> Worker.call(w, %{method: "block", args: [1]}) end)
      wait_until(fn -> Worker.info(w).inflight == 1 end)
      assert {:ok, %{inflight: 1}} = Worker.health_check(w)
      assert {:ok, "woke"} = Task.await(task)
    end
  end

  describe "describe/1" do
    test "returns the method catalogue" do
      w = start_worker()
      assert {:ok, %{methods: methods}} = Worker.describe(w)
      add = Enum.find(methods, &(&1.name == "add"))
      assert [%{name: "a"}, %{name: "b"}] = add.params
      assert Enum.find(methods, &(&1.name == "count")).streaming
    end
  end

  describe "Python logging" do
    test ":log frames go to Logger with the worker's id" do
      w = start_worker(worker_id: "logger-w")

      log =
        capture_log(fn ->
          assert {:ok, "logged"} =
                   Worker.call(w, %{method: "log_message", args: ["warning", "hello from python"]})

          # the :log frame may trail the reply by a moment
          Process.sleep(100)
        end)

      assert log =~ "hello from python"
      assert log =~ "[warning]"
      assert log =~ "snakepit_worker=logger-w"
    end
  end

  describe "stop/1" do
    test "stops the Python process" do
      w = start_worker()
      os_pid = Worker.info(w).os_pid
      stop_supervised!(Worker)
      refute Process.alive?(w)
      assert_os_pid_exited(os_pid)
    end

    test "escalates to SIGTERM/SIGKILL when a call never ends" do
      w = start_worker(shutdown_grace: 100)
      os_pid = Worker.info(w).os_pid
      spawn(fn -> Worker.call(w, %{method: "block", args: [600]}, timeout: :infinity) end)
      wait_until(fn -> Worker.info(w).inflight == 1 end)
      capture_log(fn -> stop_supervised!(Worker) end)
      assert_os_pid_exited(os_pid)
    end

    test "killing the worker process outright still ends Python (end of input)" do
      Process.flag(:trap_exit, true)
      {:ok, w} = Worker.start_link(target: test_worker())
      os_pid = Worker.info(w).os_pid
      Process.exit(w, :kill)
      assert_receive {:EXIT, ^w, :killed}
      assert_os_pid_exited(os_pid)
    end

    test "killing the owner of the worker ends Python" do
      test = self()

      owner =
        spawn(fn ->
          {:ok, w} = Worker.start_link(target: test_worker())
          send(test, {:started, w, Worker.info(w).os_pid})
          Process.sleep(:infinity)
        end)

      assert_receive {:started, w, os_pid}, 10_000

      capture_log(fn ->
        Process.exit(owner, :kill)
        wait_until(fn -> not Process.alive?(w) end)
        assert_os_pid_exited(os_pid)
      end)
    end

    test "calls still running when the grace ends get :cancelled" do
      w = start_worker(shutdown_grace: 200)
      task = Task.async(fn -> Worker.call(w, %{method: "sleep", args: [30]}, timeout: 30_000) end)
      wait_until(fn -> Worker.info(w).inflight == 1 end)
      stop_supervised!(Worker)
      assert {:error, %Error{kind: kind}} = Task.await(task)
      assert kind in [:cancelled, :shutting_down]
    end
  end
end
