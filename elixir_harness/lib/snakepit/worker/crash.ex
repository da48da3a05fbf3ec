defmodule Snakepit.Worker.Crash do
  @moduledoc false
  # What a worker does when its Python process ends or must be ended: every
  # call in flight gets its one terminal error (see `Snakepit.Worker.Failure`
  # for the messages), the pool hears of it, the process tree is killed where
  # it may still be there, and a restart is scheduled (at once, or later in a
  # crash loop: see `Snakepit.Worker.Restart`). These functions take and
  # return the worker's state map.

  require Logger

  alias Snakepit.{Call, OSProcess, Telemetry}
  alias Snakepit.Worker.{BeamCalls, Calls, Failure, Restart}

  @doc "The process exited with `status` (before `:ready`: it never started)."
  @spec exited(integer(), map()) :: map()
  def exited(status, %{status: :starting} = state) do
    why = Failure.exited(status) <> " before sending :ready"
    start_failed(Failure.start_failed(why, state), %{state | port: nil})
  end

  def exited(status, state) do
    died(Failure.exited(status), %{exit_status: status}, state)
  end

  @doc """
  The port ended without an exit status (e.g. `:epipe`: a call was written as
  the process died). It is as dead to us as if it had exited; it is killed to
  be sure.
  """
  @spec port_closed(term(), map()) :: map()
  def port_closed(reason, state) do
    state = kill(state)
    why = "its port closed (#{inspect(reason)}) with no exit status"

    case state.status do
      :starting ->
        start_failed(Failure.start_failed(why <> " before sending :ready", state), state)

      _ ->
        died(why <> "; it was killed to be sure", %{port_closed: reason}, state)
    end
  end

  @doc "The process will not get to `:ready` (`why`): it is killed."
  @spec never_ready(String.t(), map()) :: map()
  def never_ready(why, state) do
    error = Failure.start_failed(why, state)
    start_failed(error, kill(state))
  end

  @doc "The process left `:hung_after` health polls unanswered: it is killed."
  @spec hung(map()) :: map()
  def hung(state) do
    error = Failure.hung(state)
    log_failure(error, state)

    Telemetry.execute(
      [:snakepit, :worker, :hung],
      %{missed_polls: state.health_misses, system_time: System.system_time()},
      event_meta(error, state)
    )

    crashed(error, kill(state))
  end

  @doc """
  Call `id` (already taken out of `calls`) did not end within `:cancel_grace`
  of its cancel. It gets its one terminal now; the other calls in flight on
  the same process cannot survive the kill.
  """
  @spec cancel_ignored(non_neg_integer(), Call.t(), map()) :: map()
  def cancel_ignored(id, call, state) do
    {what, cancelled, error} = Failure.cancel_ignored(id, call, state)
    Call.reply(call, {:error, cancelled})
    state = if call.stream, do: %{state | refs: Map.delete(state.refs, call.ref)}, else: state

    Logger.warning("#{what}; killing the Python process (OS pid #{state.os_pid})",
      snakepit_worker: Failure.name(state)
    )

    crashed(error, kill(state))
  end

  @doc "The process sent `bin`, which does not decode: it is killed."
  @spec undecodable(binary(), map()) :: map()
  def undecodable(bin, state) do
    error = Failure.undecodable(bin, state)
    Logger.error(error.message, snakepit_worker: Failure.name(state))
    crashed(error, kill(state))
  end

  @doc "Closes the port and SIGKILLs the process tree (see `OSProcess.kill_tree/3`)."
  @spec kill(map()) :: map()
  def kill(%{port: port} = state) do
    if is_port(port), do: OSProcess.close(port)
    OSProcess.kill_tree(state.os_pid, state.port_os_pid)
    %{state | port: nil}
  end

  defp died(why, details, state) do
    error = Failure.crashed(why, details, state)
    log_failure(error, state)
    crashed(error, %{state | port: nil})
  end

  defp log_failure(error, state) do
    Logger.error("#{error.message}\n(#{map_size(state.calls)} call(s) in flight failed)",
      snakepit_worker: Failure.name(state)
    )
  end

  # The process died or was killed after :ready: fail everything, restart.
  defp crashed(error, state) do
    # The pool hears :down rather than a checkin per failed call. A call the
    # pool marked `retry` (an idempotent method, not yet retried) goes back to
    # it for one more try instead.
    crashed_event(error, state)

    for {_id, call} <- state.calls do
      Calls.ended(call, {:error, error}, :exception, state)

      if state.pool != nil and Map.get(call, :retry, false),
        do: send(state.pool, {:"$snakepit_retry", self(), call, error}),
        else: Call.reply(call, {:error, error})
    end

    for {_id, {_what, from}} <- state.asks,
        from != :poll,
        do: GenServer.reply(from, {:error, error})

    if state.pool, do: send(state.pool, {:"$snakepit_down", self(), error})
    state = BeamCalls.kill_all(state)

    schedule_restart(%{
      state
      | calls: %{},
        refs: %{},
        asks: %{},
        health_poll: false,
        last_error: error
    })
  end

  defp start_failed(error, state) do
    Logger.error(error.message, snakepit_worker: Failure.name(state))
    crashed_event(error, state)
    for from <- state.ready_waiters, do: GenServer.reply(from, {:error, error})
    for call <- state.backlog, do: Call.reply(call, {:error, error})
    if state.pool, do: send(state.pool, {:"$snakepit_start_failed", self(), error})
    state = BeamCalls.kill_all(state)
    schedule_restart(%{state | ready_waiters: [], backlog: [], last_error: error})
  end

  # [:snakepit, :worker, :crashed]; the process's metrics so far are kept (Snakepit.Metrics).
  defp crashed_event(error, state) do
    Snakepit.Metrics.Store.python_ended()

    Telemetry.execute(
      [:snakepit, :worker, :crashed],
      %{inflight: map_size(state.calls), system_time: System.system_time()},
      event_meta(error, state)
    )
  end

  defp event_meta(error, state) do
    %{
      pool: state.pool,
      worker: self(),
      worker_id: Failure.name(state),
      os_pid: state.os_pid,
      reason: error.kind,
      error: error
    }
  end

  defp schedule_restart(state) do
    now = Call.now_ms()

    {streak, delay} =
      Restart.next(now, state.ready_at, state.last_crash_at, state.crash_streak, state.opts)

    if delay > 0 do
      Logger.warning("crash loop (#{streak} early crashes in a row): restarting in #{delay} ms",
        snakepit_worker: Failure.name(state)
      )
    end

    Process.send_after(self(), :restart, delay)

    %{
      state
      | port: nil,
        status: :down,
        crash_streak: streak,
        last_crash_at: now,
        backoff_ms: delay
    }
  end
end
