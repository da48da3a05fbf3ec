defmodule Snakepit.TestHelpers do
  @moduledoc false
  # Shared helpers for the ExUnit suite. Waits poll for a condition instead of
  # asserting on durations: the suite runs on loaded 2-core machines.

  import ExUnit.Assertions

  @fixtures Path.expand("../fixtures", __DIR__)

  @doc "Absolute path of a fixture worker."
  def fixture(name), do: Path.join(@fixtures, name)

  @doc "The fixture every test uses unless it needs a misbehaving one."
  def test_worker, do: fixture("test_worker.py")

  @doc "A pool name no other test uses."
  def unique_name(prefix \\ "pool"),
    do: :"#{prefix}_#{System.unique_integer([:positive])}"

  @doc "Starts a pool of the test worker under the test supervisor; returns its name."
  def start_pool(opts \\ []) do
    name = Keyword.get_lazy(opts, :name, fn -> unique_name() end)
    opts = Keyword.merge([name: name, target: test_worker(), size: 2], opts)
    ExUnit.Callbacks.start_supervised!({Snakepit.Pool, opts}, id: name)
    name
  end

  @doc "Asserts the OS process `os_pid` is gone (or goes within `timeout` ms)."
  def assert_os_pid_exited(os_pid, timeout \\ 5_000) when is_integer(os_pid) do
    assert Snakepit.OSProcess.await_exit(os_pid, timeout),
           "OS process #{os_pid} is still alive after #{timeout} ms"
  end

  @doc "Runs `fun` with the log captured (and dropped); returns what `fun` returned."
  def capture_log_result(fun) do
    ref = make_ref()
    ExUnit.CaptureLog.capture_log(fn -> send(self(), {ref, fun.()}) end)
    assert_received {^ref, result}
    result
  end

  @doc "Stops the pool `name` started under `sup` and asserts none of `os_pids` is left."
  def stop_leaving_nothing(sup, name, os_pids) do
    Process.unlink(sup)
    assert :ok = Snakepit.Pool.stop(name)
    Enum.each(os_pids, &assert_os_pid_exited/1)
  end

  @doc "Polls `fun` until it returns a truthy value; returns that value."
  def wait_until(fun, timeout \\ 10_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait_until(fun, deadline)
  end

  defp do_wait_until(fun, deadline) do
    if value = fun.() do
      value
    else
      if System.monotonic_time(:millisecond) > deadline, do: flunk("condition not met in time")
      Process.sleep(20)
      do_wait_until(fun, deadline)
    end
  end

  @doc "OS pids of every worker of `pool`."
  def os_pids(pool), do: Enum.map(Snakepit.Pool.stats(pool).worker_details, & &1.os_pid)

  @doc "The worker GenServer of `pool` whose Python process has `os_pid`."
  def worker_with_os_pid(pool, os_pid) do
    Enum.find(Snakepit.Pool.workers(pool), &(Snakepit.Worker.info(&1).os_pid == os_pid))
  end

  @doc "Every OS pid of `pool`'s workers: the workers' and their guards'."
  def all_os_pids(pool) do
    for w <- Snakepit.Pool.stats(pool).worker_details,
        pid <- [w.os_pid, w.guard_pid],
        pid,
        do: pid
  end

  @doc "Collects a stream's events sent as `{:event, tag, event}` up to its terminal: `{chunks, terminal}`."
  def collect_stream(tag, timeout \\ 30_000, acc \\ []) do
    receive do
      {:event, ^tag, {:data, x}} -> collect_stream(tag, timeout, [x | acc])
      {:event, ^tag, terminal} -> {Enum.reverse(acc), terminal}
    after
      timeout -> {Enum.reverse(acc), :no_terminal}
    end
  end

  @doc "kill -9"
  def kill9(os_pid), do: Snakepit.OSProcess.signal(os_pid, "KILL")
end
