defmodule Snakepit.Pool.Roster do
  @moduledoc false
  # The pool's table of its workers (`state.workers`, pid => worker map) and
  # what the workers tell it about themselves: a worker met for the first
  # time, ready (a fresh Python process: its limits drawn, its capacity asked
  # for), its capacity and idempotent methods, failing to start, down, the
  # models it holds, gone; the supervisor's census of the workers it started;
  # and readiness (`Snakepit.Pool.await_ready/2`). Each function takes and
  # returns the pool's state map; a change that frees room serves the queue
  # (`Snakepit.Pool.Dispatch`), one that changes who should run is
  # reconciled (`Snakepit.Pool.Lifecycle`).

  alias Snakepit.{Call, Worker}
  alias Snakepit.Pool.{Breakers, Dispatch, Lifecycle, Members, Queue, Tree}

  @doc "Worker `pid` is ready: a fresh Python process, nothing in flight, new limits."
  def ready(pid, info, state) do
    {w, state} = known(pid, state)
    # a fresh process: nothing of the old one is in flight (its :down said so)
    state = %{state | calls: Map.drop(state.calls, Map.keys(w.inflight))}
    now = Call.now_ms()
    cfg = state.cfg

    w =
      %{
        w
        | status: if(w.retiring, do: :draining, else: :ready),
          inflight: %{},
          sync: 0,
          ever_ready: true,
          born: now,
          idle_since: nil,
          # a new process: the old one's reasons to be replaced are gone
          due: if(w.gen < state.generation, do: :reload),
          limit: limit(w.served, cfg.max_calls, cfg.max_calls_jitter),
          expires: limit(now, cfg.max_age, cfg.max_age_jitter)
      }
      |> Map.merge(Map.take(info, [:worker_id, :os_pid, :guard_pid]))

    ask_capacity(pid)
    state = %{state | workers: Map.put(state.workers, pid, w)}
    state = state |> answer_ready_waiters() |> Lifecycle.reconcile()
    Dispatch.serve_queue(pid, state)
  end

  @doc "Worker `pid`'s capacity (`threads`, `max_inflight`, async and idempotent methods) arrived."
  def capacity(pid, ready, methods, state) do
    case state.workers do
      %{^pid => w} ->
        w = Queue.capacity(w, ready, methods)
        idem = for %{name: name, idempotent: true} <- methods, into: %{}, do: {name, true}
        w = %{w | idempotent: idem}
        Dispatch.serve_queue(pid, %{state | workers: %{state.workers | pid => w}})

      _ ->
        state
    end
  end

  @doc "Worker `pid` could not start its Python process."
  def start_failed(pid, error, state) do
    {w, state} = known(pid, state)
    state = %{state | workers: Map.put(state.workers, pid, %{w | status: :down})}
    state = if state.breaker, do: Breakers.start_failed(state, Call.now_ms()), else: state
    state = if w.ever_ready, do: state, else: answer_ready_waiters(%{state | start_error: error})
    Lifecycle.maybe_stop(pid, state)
  end

  # The worker has already answered every call in flight on it (`:worker_crashed`,
  # `:worker_hung`, ...) but those it handed back for a retry; calls it is sent
  # from now on come back as requeues.
  @doc "Worker `pid`'s Python process is down (its calls are answered already)."
  def down(pid, state) do
    case state.workers do
      %{^pid => w} ->
        refs = Map.keys(w.inflight)

        state =
          if state.breaker, do: Breakers.worker_down(refs, state, Call.now_ms()), else: state

        calls = Map.drop(state.calls, refs)
        w = %{w | status: :down, inflight: %{}, sync: 0, models: MapSet.new()}
        state = %{state | workers: %{state.workers | pid => w}, calls: calls}
        state = Lifecycle.maybe_stop(pid, %{state | restarts: state.restarts + 1})
        Dispatch.serve_all(state)

      _ ->
        state
    end
  end

  @doc "Worker `pid` holds `models` now (affinity keys)."
  def models(pid, models, state) do
    case state.workers do
      %{^pid => w} ->
        models = Queue.models(models)
        Dispatch.serve_all(%{state | workers: %{state.workers | pid => %{w | models: models}}})

      _ ->
        state
    end
  end

  # The worker GenServer itself ended: retired by us, or died (the supervisor
  # starts another).
  @doc "Worker `pid`'s GenServer ended (`reason`): its calls fail, it leaves the table."
  def gone(pid, reason, state) do
    case Map.pop(state.workers, pid) do
      {nil, _} ->
        state

      {w, workers} ->
        refs = Map.keys(w.inflight)
        error = Call.down_error(pid, reason)
        Enum.each(refs, &Call.reply(%{ref: &1}, {:error, error}))
        calls = Map.drop(state.calls, refs)
        pending = if w.retiring, do: state.pending, else: state.pending + 1
        state = %{state | workers: workers, calls: calls, pending: pending}
        state |> Lifecycle.reload_progress() |> Lifecycle.reconcile() |> Dispatch.serve_all()
    end
  end

  @doc "The supervisor's census: `count` workers started, the highest numbered `highest`."
  def census(count, highest, state) do
    state = %{
      state
      | census: true,
        pending: max(count - map_size(state.workers), 0),
        next_n: max(state.next_n, highest + 1)
    }

    Lifecycle.reconcile(state)
  end

  @doc "A worker asked for could not be started by the supervisor."
  def child_failed(state), do: %{state | pending: max(state.pending - 1, 0)}

  defp new_worker(pid, state) do
    Process.monitor(pid)

    Map.merge(Queue.new_worker(state.pipeline), %{
      worker_id: nil,
      os_pid: nil,
      guard_pid: nil,
      served: 0,
      ever_ready: false,
      retiring: nil,
      stopping: false,
      due: nil,
      born: nil,
      gen: state.generation,
      limit: nil,
      expires: nil,
      idle_since: nil,
      tick_served: 0,
      memory_mb: nil,
      idempotent: %{}
    })
  end

  # The worker `pid`, met now for the first time if need be: one of the
  # workers asked for (pending) has shown up.
  defp known(pid, state) do
    case state.workers do
      %{^pid => w} ->
        {w, state}

      _ ->
        w = new_worker(pid, state)
        state = %{state | pending: max(state.pending - 1, 0)}

        # asked for before a reload began: it may run the old code
        case state.reload do
          %{stale_pending: n} = r when n > 0 ->
            w = %{w | gen: state.generation - 1, due: :reload}
            {w, %{state | reload: %{r | stale_pending: n - 1}}}

          _ ->
            {w, state}
        end
    end
  end

  defp limit(_base, nil, _jitter), do: nil
  defp limit(base, n, jitter), do: base + Members.jittered(n, jitter)

  # How many calls the worker takes at once comes from its ready info and its
  # catalogue (which methods are async, which idempotent). Both are asked for
  # off the pool's process; until the answer comes, the worker takes one call
  # at a time.
  defp ask_capacity(pid) do
    pool = self()

    # (an exit: the worker went away meanwhile, and its next :ready asks again)
    Tree.detached(fn ->
      with %{ready: ready} when is_map(ready) <- Worker.info(pid),
           {:ok, %{methods: methods}} when is_list(methods) <- Worker.describe(pid) do
        send(pool, {:"$snakepit_capacity", pid, ready, methods})
      end
    end)
  end

  # ------------------------------------------------------------ readiness

  @doc "`:ok` once every worker has been ready once, `{:error, _}` if one failed to start, or `:waiting`."
  def ready_status(state) do
    ready = Enum.count(state.workers, fn {_, w} -> w.ever_ready end)

    cond do
      ready >= state.size -> :ok
      state.start_error -> {:error, state.start_error}
      true -> :waiting
    end
  end

  defp answer_ready_waiters(%{ready_waiters: []} = state), do: state

  defp answer_ready_waiters(state) do
    case ready_status(state) do
      :waiting ->
        state

      reply ->
        Enum.each(state.ready_waiters, &GenServer.reply(&1, reply))
        %{state | ready_waiters: []}
    end
  end
end
