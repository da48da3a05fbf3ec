defmodule Snakepit.Worker.Calls do
  @moduledoc false
  # The calls on one worker: sending them, matching each terminal frame to its
  # call, cancelling. These functions take and return the worker's state map
  # and keep its `:calls` (id => call, in flight), `:refs` (ref => id, streams
  # only) and `:backlog` (calls that came while no process was ready); ids come
  # from `:next_id`, shared with `Snakepit.Worker.Health`'s asks. When the
  # process ends, `Snakepit.Worker.Crash` fails and clears them.
  #
  # `dispatch/2` and `finish/3` are the hot path of every call: keep them to
  # the function calls and map operations they have.

  alias Snakepit.{Call, Error, Telemetry}
  alias Snakepit.Worker.{BeamCalls, Callers, Wire}

  @doc "A call arriving at the worker: sent now, kept for later, or handed back to the pool."
  @spec accept(Call.t(), map()) :: map()
  def accept(call, %{status: :ready} = state), do: dispatch(call, state)

  def accept(call, %{status: status, pool: pool} = state)
      when status in [:starting, :down] and pool != nil and call.pool == pool do
    # The pool picked us just before hearing that we crashed: hand it back.
    send(pool, {:"$snakepit_requeue", self(), call})
    state
  end

  def accept(call, %{status: status} = state) when status in [:starting, :down] do
    %{state | backlog: [call | state.backlog]}
  end

  @doc "Sends a call to the Python process (or fails it if its deadline has passed)."
  @spec dispatch(Call.t(), map()) :: map()
  def dispatch(call, state) do
    case time_left(call) do
      :expired ->
        finish_call(
          call,
          {:error, Error.new(:timeout, "the call's deadline passed before it could be sent")},
          state
        )

        state

      timeout_ms ->
        id = state.next_id

        Wire.send(
          state.port,
          {:call, id, call.method, call.args, call.kwargs, opts(call, timeout_ms, state)}
        )

        call = if Telemetry.enabled?(), do: started(call, state), else: call
        state = Callers.watch(state, call.caller)
        state = %{state | next_id: id + 1, calls: Map.put(state.calls, id, call)}

        # Only streams are looked up by ref often (a credit per chunk taken); a
        # cancel, rare, finds a plain call by scanning (see cancel/2).
        if call.stream, do: %{state | refs: Map.put(state.refs, call.ref, id)}, else: state
    end
  end

  # (1.1) A call from one of this worker's BEAM functions says which beam call it
  # is made under (`beam_call: ref`), so that Python can refuse one that would
  # deadlock (docs/protocol.md §9).
  defp opts(call, timeout_ms, %{beam_tasks: tasks}) when map_size(tasks) == 0,
    do: wire_opts(call, timeout_ms)

  defp opts(call, timeout_ms, state) do
    case BeamCalls.reentry(state, call.caller) do
      nil -> wire_opts(call, timeout_ms)
      ref -> Map.put(wire_opts(call, timeout_ms), :beam_call, ref)
    end
  end

  defp wire_opts(%{meta: meta, credit: nil}, nil), do: %{meta: meta}

  defp wire_opts(%{meta: meta, credit: nil}, timeout_ms),
    do: %{meta: meta, timeout_ms: timeout_ms}

  defp wire_opts(%{credit: credit} = call, timeout_ms),
    do: Map.put(wire_opts(%{call | credit: nil}, timeout_ms), :credit, credit)

  defp time_left(%{deadline: nil}), do: nil

  defp time_left(%{deadline: deadline}) do
    left = deadline - Call.now_ms()
    if left > 0, do: left, else: :expired
  end

  # [:snakepit, :call, :start] (Snakepit.Telemetry): the call remembers when it
  # was sent and how long it had queued, for its :stop.
  defp started(call, state) do
    now = System.monotonic_time()

    queue_time =
      case Map.get(call, :queued_at) do
        nil -> 0
        at -> max(now - System.convert_time_unit(at, :microsecond, :native), 0)
      end

    call = Map.merge(call, %{sent_at: now, queue_time: queue_time})
    measurements = %{monotonic_time: now, system_time: System.system_time()}
    Telemetry.execute([:snakepit, :call, :start], measurements, event_meta(call, state))
    call
  end

  @doc """
  Emits the end of `call` (it was `started`): `:stop` for a terminal from
  Python, `:exception` when the harness failed it (a crash, a kill, a stop).
  """
  @spec ended(map(), term(), :stop | :exception, map()) :: :ok
  def ended(%{sent_at: sent_at} = call, reply, event, state) do
    now = System.monotonic_time()
    m = %{duration: now - sent_at, queue_time: call.queue_time, monotonic_time: now}

    meta =
      case reply do
        {:error, %Error{kind: kind} = error} when event == :exception ->
          Map.merge(event_meta(call, state), %{kind: :error, reason: error, outcome: kind})

        {:error, %Error{kind: kind} = error} ->
          Map.merge(event_meta(call, state), %{outcome: kind, error: error})

        _ ->
          Map.merge(event_meta(call, state), %{outcome: :ok, error: nil})
      end

    Telemetry.execute([:snakepit, :call, event], m, meta)
  end

  def ended(_call, _reply, _event, _state), do: :ok

  defp event_meta(call, state) do
    %{
      pool: state.pool,
      worker: self(),
      worker_id: state.worker_id,
      method: call.method,
      stream: call.stream,
      traceparent: Map.get(call.meta, "traceparent")
    }
  end

  @doc "Call `id` ended with `reply` (its terminal frame): the caller gets it."
  @spec finish(non_neg_integer(), term(), map()) :: map()
  def finish(id, reply, state) do
    case Map.pop(state.calls, id) do
      {nil, _} ->
        state

      {call, calls} ->
        ended(call, reply, :stop, state)
        finish_call(call, reply, state)
        state = %{state | calls: calls}
        if call.stream, do: %{state | refs: Map.delete(state.refs, call.ref)}, else: state
    end
  end

  defp finish_call(call, reply, state) do
    Call.reply(call, reply)
    if call.pool, do: send(call.pool, checkin(call.ref, reply))
    state
  end

  # The pool counts timeouts and crashes against its circuit breaker: an error
  # tells its kind.
  defp checkin(ref, {:error, %Error{kind: kind}}), do: {:"$snakepit_checkin", self(), ref, kind}
  defp checkin(ref, _ok), do: {:"$snakepit_checkin", self(), ref}

  @doc "The caller of `ref` gave up: Python is asked to cancel; a call not yet sent just ends."
  @spec cancel(reference(), map()) :: map()
  def cancel(ref, state) do
    case Map.fetch(state.refs, ref) do
      {:ok, id} -> cancel_id(id, state)
      :error -> cancel_plain(ref, state)
    end
  end

  defp cancel_plain(ref, state) do
    case Enum.find(state.calls, fn {_id, call} -> call.ref == ref end) do
      {id, _call} ->
        cancel_id(id, state)

      nil ->
        {cancelled, backlog} = Enum.split_with(state.backlog, &(&1.ref == ref))
        error = Error.new(:cancelled, "cancelled before it was sent")
        Enum.each(cancelled, &Call.reply(&1, {:error, error}))
        %{state | backlog: backlog}
    end
  end

  @doc """
  Sends `{:cancel, id}` and, unless `:cancel_grace` is `:infinity`, schedules
  the worker's `{:cancel_deadline, port, id}`: the last step of the ladder.
  """
  @spec cancel_id(non_neg_integer(), map()) :: map()
  def cancel_id(id, state) do
    Wire.send(state.port, {:cancel, id})
    grace = state.opts[:cancel_grace]

    if grace != :infinity,
      do: Process.send_after(self(), {:cancel_deadline, state.port, id}, grace)

    state
  end

  @doc "A watched caller died: its calls are cancelled rather than run for nobody."
  @spec caller_down(map(), pid(), reference()) :: map()
  def caller_down(state, pid, mon) do
    case Callers.down(state, pid, mon) do
      {:ok, state, ids} -> Enum.reduce(ids, state, &cancel_id/2)
      :error -> state
    end
  end

  @doc "Every call in flight and waiting gets `error` (the worker is stopping)."
  @spec fail_all(Error.t(), map()) :: :ok
  def fail_all(error, state) do
    for {_id, call} <- state.calls do
      ended(call, {:error, error}, :exception, state)
      Call.reply(call, {:error, error})
    end

    for call <- state.backlog, do: Call.reply(call, {:error, error})
    :ok
  end
end
