defmodule Snakepit.Pool.Dispatch do
  @moduledoc false
  # Calls onto workers, on the pool's state map: route a call (to a worker
  # with room, else the queue), send it and account for it, take a checkin,
  # give a worker with room the queued calls it may take, put a call a worker
  # handed back at the front, cancel. Which worker takes which call is
  # `Snakepit.Pool.Queue`'s (pure); the queue's bookkeeping is
  # `Snakepit.Pool.Waiting`'s. This is the pool server's hot path: plain
  # function calls, no message but the ones to workers and callers.

  alias Snakepit.Call
  alias Snakepit.Pool.{Breakers, Lifecycle, Queue, Waiting}

  @doc "Sends `call` to a worker with room for it, or queues it."
  def route(call, state) do
    case Queue.pick(call, state.workers) do
      nil -> Waiting.enqueue(call, state)
      worker -> dispatch(call, worker, state)
    end
  end

  @doc "Sends `call` to worker `pid` and accounts for it (in flight, LRU clock, queue time)."
  def dispatch(call, pid, state) do
    w = state.workers[pid]

    call =
      case w.idempotent do
        none when map_size(none) == 0 -> call
        _ -> retry_mark(call, w)
      end

    send(pid, {:"$snakepit_call", call})
    w = %{Queue.add(w, call, Queue.kind(w, call.method)) | last_used: state.clock + 1}

    state = %{
      state
      | workers: %{state.workers | pid => w},
        calls: Map.put(state.calls, call.ref, pid),
        clock: state.clock + 1,
        dispatched: state.dispatched + 1
    }

    # a call dispatched as it arrives never waited (and costs no clock read)
    state =
      case call.queued_at do
        nil -> state
        at -> waited(System.monotonic_time(:microsecond) - at, state)
      end

    case state.breaker do
      nil -> state
      _ -> Breakers.dispatched(call, state)
    end
  end

  defp waited(us, state) do
    %{
      state
      | queue_time_us: state.queue_time_us + us,
        max_wait_us: max(state.max_wait_us, us)
    }
  end

  # An idempotent method's call, not a stream, not retried yet: the worker
  # hands it back for one more try if its process dies before answering.
  defp retry_mark(call, w) do
    if Map.has_key?(w.idempotent, call.method) and not call.stream and
         not Map.get(call, :retried, false),
       do: Map.put(call, :retry, true),
       else: call
  end

  @doc "Worker `pid` answered call `ref` (`kind`: the error's kind, or nil)."
  def checkin(pid, ref, kind, state) do
    with %{^pid => w} <- state.workers,
         {:ok, w} <- Queue.remove(w, ref) do
      w = %{w | served: w.served + 1}

      state = %{
        state
        | workers: %{state.workers | pid => w},
          calls: Map.delete(state.calls, ref)
      }

      state = if state.breaker, do: Breakers.outcome(ref, kind, state, Call.now_ms()), else: state
      checked_in(pid, w, state)
    else
      _ -> state
    end
  end

  @doc "After a checkin on worker `pid` (now `w`): due at `:max_calls`, stopped if draining, or served."
  def checked_in(pid, w, state) do
    cond do
      w.served == w.limit ->
        serve_queue(pid, Lifecycle.make_due(pid, :max_calls, state))

      w.status == :draining ->
        Lifecycle.maybe_stop(pid, state)

      true ->
        serve_queue(pid, state)
    end
  end

  @doc "Gives worker `pid` the queued calls it has room for and may take, first come first."
  def serve_queue(pid, state) do
    # Most checkins find nothing waiting: that costs one check here.
    if state.qlen == 0 do
      state
    else
      w = state.workers[pid]

      with true <- w != nil and Queue.room_for_any?(w),
           {call, queue} <- Queue.take(state.queue, w, state.workers) do
        state = Waiting.dequeued(call, %{state | queue: queue})
        # a caller that died while queued no longer wants its call run
        state = if alive?(call.caller), do: dispatch(call, pid, state), else: state
        serve_queue(pid, state)
      else
        _ -> state
      end
    end
  end

  # Capacity or eligibility changed for more than one worker (a worker went
  # down or came back, a call was handed back, models moved): every queued
  # call, first come first, goes where it may go now, or stays queued.
  @doc "Sends every queued call that may go somewhere now; the rest stay queued, in order."
  def serve_all(state) do
    if state.qlen == 0 do
      state
    else
      {state, kept} =
        state.queue
        |> :queue.to_list()
        |> Enum.reduce({state, []}, fn call, {state, kept} ->
          cond do
            not alive?(call.caller) ->
              {Waiting.dequeued(call, state), kept}

            pid = Queue.pick(call, state.workers) ->
              {dispatch(call, pid, Waiting.dequeued(call, state)), kept}

            true ->
              {state, [call | kept]}
          end
        end)

      %{state | queue: :queue.from_list(Enum.reverse(kept))}
    end
  end

  # A caller on another node (a distributed pool) cannot be asked; its
  # monitor takes its call out of the queue if it dies.
  defp alive?(pid) when node(pid) == node(), do: Process.alive?(pid)
  defp alive?(_pid), do: true

  @doc "A call worker `pid` handed back (it went down first) goes to the front of the queue."
  def hand_back(pid, call, state) do
    state =
      with %{^pid => w} <- state.workers,
           {:ok, w} <- Queue.remove(w, call.ref) do
        Lifecycle.maybe_stop(pid, %{
          state
          | workers: %{state.workers | pid => %{w | status: :down}}
        })
      else
        _ -> state
      end

    Waiting.requeue(call, %{state | calls: Map.delete(state.calls, call.ref)})
  end

  @doc "An idempotent call whose worker crashed before answering: once more, elsewhere."
  def retry(pid, call, state) do
    state = if state.breaker, do: Breakers.retried(call, state, Call.now_ms()), else: state
    call = Map.merge(call, %{retry: false, retried: true})
    state = hand_back(pid, call, state)
    serve_all(%{state | retried: state.retried + 1})
  end

  @doc "The caller gave up on call `ref`: its worker is told, or it leaves the queue."
  def cancel(ref, state) do
    case state.calls do
      %{^ref => pid} ->
        send(pid, {:"$snakepit_cancel", ref})

        if state.breaker,
          do: Breakers.caller_gave_up(ref, state, Call.now_ms()),
          else: state

      _ ->
        Waiting.cancel(ref, state)
    end
  end

  @doc "An affinity call waited `:affinity_wait` for its busy holder: any worker may take it."
  def spill(ref, state) do
    case Queue.update(state.queue, ref, &Queue.spill/1) do
      {nil, _} -> state
      {_call, queue} -> serve_all(%{state | queue: queue})
    end
  end
end
