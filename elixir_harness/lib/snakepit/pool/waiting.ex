defmodule Snakepit.Pool.Waiting do
  @moduledoc false
  # The calls waiting for a worker, on the pool's state map: a call joining
  # the queue (or refused `:overloaded` when it is full), its caller watched
  # while it waits, a call leaving the queue (served, cancelled, its caller
  # gone, expired after `:queue_timeout`), the queue depth (`qlen`, the
  # `[:snakepit, :pool, :queue]` event, the cluster's counter). The queue
  # itself and which call a worker takes are `Snakepit.Pool.Queue`'s (pure);
  # `Snakepit.Pool.Dispatch` takes calls out of the queue to send them.

  alias Snakepit.{Call, Error}
  alias Snakepit.Pool.{Breakers, Cluster, Queue}

  @doc "Queues `call`, or refuses it `:overloaded` when `:max_queue` calls already wait."
  def enqueue(call, %{qlen: n, cfg: %{max_queue: max}} = state) when n >= max do
    details = %{queue_depth: n, max_queue: max}
    msg = "the pool's queue is full (#{n} waiting, max_queue: #{max})"
    Call.reply(call, {:error, Error.new(:overloaded, msg, details: details)})
    Breakers.release(call.ref, %{state | shed: state.shed + 1})
  end

  def enqueue(call, state) do
    call = watch(%{call | queued_at: System.monotonic_time(:microsecond)})

    if call.affinity != nil and state.cfg.affinity_wait != :infinity,
      do: Process.send_after(self(), {:"$snakepit_spill", call.ref}, state.cfg.affinity_wait)

    queued(Queue.push(state.queue, call), call, state)
  end

  @doc "Puts `call` (handed back by a worker) at the front of the queue."
  def requeue(call, state) do
    call = watch(%{call | queued_at: System.monotonic_time(:microsecond)})
    queued(Queue.requeue(state.queue, call), call, state)
  end

  # Calls waiting are watched: a caller that dies leaves the queue at once.
  defp watch(call), do: Map.put(call, :mon, Process.monitor(call.caller))

  defp queued(queue, call, state) do
    state = %{
      state
      | queue: queue,
        qlen: state.qlen + 1,
        waiting: Map.put(state.waiting, Map.get(call, :mon), call.ref)
    }

    queue_event(state, :in)
    arm_expiry(state)
  end

  defp queue_event(state, change) do
    Cluster.queue_depth(state.cluster, state.qlen)

    Snakepit.Telemetry.execute([:snakepit, :pool, :queue], %{depth: state.qlen}, %{
      pool: state.name,
      change: change
    })
  end

  @doc "Accounts for `call` having left the queue (the queue itself is already without it)."
  def dequeued(call, state) do
    mon = Map.get(call, :mon)
    if mon, do: Process.demonitor(mon, [:flush])
    state = %{state | qlen: state.qlen - 1, waiting: Map.delete(state.waiting, mon)}
    queue_event(state, :out)
    state
  end

  @doc "The queued call `ref` is cancelled by its caller: it leaves the queue with `:cancelled`."
  def cancel(ref, state) do
    {cancelled, queue} = Queue.cancel(state.queue, ref)
    state = Enum.reduce(cancelled, %{state | queue: queue}, &dequeued/2)
    err = Error.new(:cancelled, "cancelled while waiting for a worker")
    Enum.each(cancelled, &Call.reply(&1, {:error, err}))
    Breakers.release(ref, state)
  end

  @doc "The caller of the queued call `ref` died: its call leaves the queue."
  def caller_gone(ref, state) do
    {gone, queue} = Queue.cancel(state.queue, ref)
    state = Enum.reduce(gone, %{state | queue: queue}, &dequeued/2)
    Breakers.release(ref, state)
  end

  # ----------------------------------------------------- queue timeouts

  defp arm_expiry(%{qtimer: nil, cfg: %{queue_timeout: qt}} = state) when is_integer(qt),
    do: %{state | qtimer: Process.send_after(self(), :"$snakepit_qexpire", qt)}

  defp arm_expiry(state), do: state

  @doc "Fails the calls that waited `:queue_timeout` with `:queue_timeout`; arms the next look."
  def expire(%{cfg: %{queue_timeout: qt}} = state) do
    now = System.monotonic_time(:microsecond)
    {expired, queue, oldest} = Queue.expire(state.queue, now - qt * 1_000)
    state = Enum.reduce(expired, %{state | queue: queue, qtimer: nil}, &dequeued/2)

    state =
      Enum.reduce(expired, state, fn call, state ->
        waited = div(now - call.queued_at, 1_000)

        error =
          Error.new(:queue_timeout, "waited #{waited} ms for a worker (queue_timeout: #{qt} ms)",
            details: %{waited_ms: waited, queue_timeout: qt}
          )

        Call.reply(call, {:error, error})
        Breakers.release(call.ref, state)
      end)

    state = %{state | queue_timeouts: state.queue_timeouts + length(expired)}

    # the next look: when the oldest left is due (at least 10 ms on: batches)
    if oldest do
      delay = max(div(oldest + qt * 1_000 - now, 1_000) + 1, 10)
      %{state | qtimer: Process.send_after(self(), :"$snakepit_qexpire", delay)}
    else
      state
    end
  end
end
