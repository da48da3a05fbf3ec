defmodule Snakepit.Pool do
  @moduledoc """
  A supervised pool of Python workers.

      {:ok, _} = Snakepit.Pool.start_link(name: :ml, target: "ml_worker.py", size: 3)
      {:ok, result} = Snakepit.call(:ml, %{method: "predict", args: ["gpt2", "hi"]})

  Each call goes to a worker with room for it (the one with the fewest calls
  in flight, then the one used longest ago); when no worker has room it waits
  in a FIFO queue of at most `:max_queue` calls. A worker whose Python process
  dies fails every call in flight on it at once (`:worker_crashed`; a method
  declared `idempotent=True` is retried once instead) and comes back by
  itself; the pool routes around it meanwhile, and calls waiting in the queue
  go to the other workers or to the replacement. A worker that stops
  answering its health polls is killed and replaced the same way
  (`:worker_hung`).

  `docs/pool.md` describes every option, its default and its trade-off:
  load shedding (`:max_queue`, `:queue_timeout`), recycling (`:max_calls`,
  `:max_age`, `:max_memory_mb`), elastic size (`:min_size`, `:max_size`,
  `:scale_up_wait`, `:scale_down_idle`), the circuit breaker
  (`:circuit_breaker`), affinity spill (`:affinity_wait`), rolling reload
  (`reload/2`) and `:events`.

  ## Calls at once

  A worker says in its `:ready` info how many sync calls it runs at once
  (`threads`, from `worker_opts: [threads: n]`) and how many calls it accepts
  at once (`max_inflight`); its catalogue says which methods are `async`. The
  pool gives a worker a sync call while fewer than `threads` sync calls are in
  flight on it, and an async call while fewer than `max_inflight` calls are.
  So a worker started with the default `--threads 1` gets one sync call at a
  time. Until a new worker's catalogue has arrived (just after `:ready`) it
  takes one call at a time. `pipeline: n` lets up to `n` more sync calls wait
  inside each worker beyond its `threads` (more throughput for short calls; a
  call may then wait behind a long one while another worker is idle).

  ## Affinity

  `Snakepit.call(pool, request, affinity: key)` sends the call to a ready
  worker whose Python side reported `key` as loaded (a health poll or a
  pushed `"loaded_models"` event), waiting for it when it is busy — for at
  most `:affinity_wait` ms, after which any worker may take the call (and
  load the model). When no worker holds `key`, the worker with the fewest
  models loaded takes it.

  ## Options

    * `:name` (required) - the atom the pool is registered under
    * `:target` (required) - the worker TARGET, e.g. `"path/worker.py"`
    * `:size` - Python processes to start with (default: schedulers online,
      within `:min_size`..`:max_size`)
    * `:python`, `:worker_opts`, `:worker_args`, `:health_interval`,
      `:hung_after`, `:start_timeout`, `:shutdown_grace`, `:cancel_grace`,
      `:stable_after`, `:restart_window`, `:output`, `:cd`, `:env`,
      `:beam_functions` - passed to every `Snakepit.Worker`
    * `:pipeline` - sync calls a worker may hold beyond its `threads` (default 0)
    * `:max_queue` (5_000), `:queue_timeout` (`:infinity`), `:max_calls`,
      `:max_calls_jitter`, `:max_age`, `:max_age_jitter`, `:max_memory_mb`
      (all nil: off), `:min_size`, `:max_size` (both `:size`), `:scale_up_wait`
      (100 ms), `:scale_down_idle` (30_000 ms), `:affinity_wait`
      (`:infinity`), `:circuit_breaker` (nil: off), `:events` (`[]`),
      `:distributed` (false: join the pools of the same name on connected
      nodes), `:gossip_interval` (200 ms) - see `docs/pool.md`

  `start_link/1` returns once every worker is ready, or
  `{:error, %Snakepit.Error{kind: :start_failed}}` if one could not start.
  """

  use GenServer

  alias Snakepit.{Call, Error, Options, Worker}
  alias Snakepit.Pool.{Breakers, Cluster, Lifecycle, Members, Queue, Stats, Tree}

  @type name :: atom()

  @doc false
  def child_spec(opts) do
    %{
      id: {__MODULE__, Keyword.get(opts, :name)},
      start: {__MODULE__, :start_link, [opts]},
      type: :supervisor
    }
  end

  @doc "Starts the pool and its workers; returns once all are ready."
  @spec start_link(keyword()) :: Supervisor.on_start() | {:error, Error.t()}
  def start_link(opts) do
    {pipeline, opts} = pipeline!(opts)
    opts = opts |> Options.pool!() |> Keyword.put(:pipeline, pipeline)
    start_timeout = Keyword.get(opts, :start_timeout, Options.default(:start_timeout))

    with {:ok, sup} <- Supervisor.start_link(Tree, opts) do
      case await_ready(opts[:name], start_timeout + 2_000) do
        :ok ->
          {:ok, sup}

        {:error, error} ->
          Process.unlink(sup)
          Supervisor.stop(sup, :normal)
          {:error, error}
      end
    end
  end

  # :pipeline is the pool's alone (its workers never see it).
  defp pipeline!(opts) do
    if Keyword.keyword?(opts) do
      case Keyword.pop(opts, :pipeline, 0) do
        {n, opts} when is_integer(n) and n >= 0 ->
          {n, opts}

        {n, _} ->
          raise ArgumentError, ":pipeline must be a non-negative integer, got: #{inspect(n)}"
      end
    else
      # Options.pool!/1 says what is wrong
      {0, opts}
    end
  end

  @doc "Stops the pool: every worker shuts its Python process down (see `Snakepit.Worker`)."
  @spec stop(name(), timeout()) :: :ok
  def stop(pool, timeout \\ :infinity) do
    pool |> GenServer.call(:supervisor) |> Supervisor.stop(:normal, timeout)
  end

  @doc "Waits until every worker has been ready once."
  @spec await_ready(name(), timeout()) :: :ok | {:error, Error.t()}
  def await_ready(pool, timeout \\ 10_000) do
    GenServer.call(pool, :await_ready, timeout)
  catch
    :exit, {:timeout, _} -> {:error, Error.new(:timeout, "pool not ready within #{timeout} ms")}
  end

  @doc """
  Replaces every worker, one at a time, with a fresh Python process (which
  imports the TARGET anew): a replacement is started first, the old worker
  takes no new call once it is ready, finishes the calls it has and is
  stopped. No call fails because of it and the ready workers never drop
  below the pool's target size. Returns `:ok` once every worker that was
  there (or starting) when it was called has been replaced; `stats/1` shows
  the progress (`reload`).
  """
  @spec reload(name(), timeout()) :: :ok | {:error, Error.t()}
  def reload(pool, timeout \\ :infinity) do
    GenServer.call(pool, :reload, timeout)
  catch
    :exit, {:timeout, _} ->
      {:error, Error.new(:timeout, "reload not finished within #{timeout} ms")}
  end

  @doc """
  Pool statistics: `workers` (the target size), `target_size`,
  `actual_size` (workers not being retired), `min_size`, `max_size`,
  `last_scaled` (nil, or `%{from, to, why, ago_ms}`), `ready`, `busy`
  (workers with at least one call in flight), `idle`, `down`, `draining`
  (workers being retired), `inflight`, `queue_depth`, `max_queue`,
  `avg_queue_time_ms` (over every call dispatched), `served`, `restarts`,
  `shed` (calls refused `:overloaded`), `queue_timeouts`, `retried`,
  `recycled` (workers replaced for `:max_calls`, `:max_age`,
  `:max_memory_mb`), `circuit` (`:closed`, `:open` or `:half_open`; the
  pool's), `circuits` (per method, with `per_method: true`), `reload` (nil, or
  `%{in_progress, done, total}`) and `worker_details` (one map per worker:
  `worker_id`, `os_pid`, `guard_pid`, `status` (`:idle`, `:busy`, `:down` or
  `:draining`), `inflight`, `threads`, `max_inflight`, `served`,
  `loaded_models`, `memory_mb` (with `:max_memory_mb`), `due` (why it will be
  replaced, or nil)).
  """
  @spec stats(name()) :: map()
  def stats(pool), do: GenServer.call(pool, :stats)

  @doc "The pids of the pool's workers (for `Snakepit.Worker` functions)."
  @spec workers(name()) :: [pid()]
  def workers(pool), do: GenServer.call(pool, :workers)

  # ---------------------------------------------------------------- server

  @impl true
  def init({opts, sup}) do
    cfg = Options.pool_config(opts)

    state = %{
      name: opts[:name],
      sup: sup,
      opts: opts,
      cfg: cfg,
      size: opts[:size],
      pipeline: opts[:pipeline],
      workers: %{},
      calls: %{},
      queue: Queue.new(),
      qlen: 0,
      # monitors of the callers of queued calls: mon => ref
      waiting: %{},
      qtimer: nil,
      clock: 0,
      dispatched: 0,
      queue_time_us: 0,
      max_wait_us: 0,
      restarts: 0,
      start_error: nil,
      ready_waiters: [],
      # membership: the static children are pending until seen
      target: opts[:size],
      pending: opts[:size],
      census: false,
      next_n: opts[:size] + 1,
      last_scaled: nil,
      # elastic size: the last scale-up and the current window of looks
      scaling: %{last_up: nil, since: Call.now_ms(), peak: 0},
      generation: 0,
      reload: nil,
      breaker: Breakers.new(cfg.circuit_breaker),
      shed: 0,
      queue_timeouts: 0,
      retried: 0,
      recycled: 0,
      # distributed: the counters callers read the queue depth from (Pool.Cluster)
      cluster: Cluster.attach(opts)
    }

    Tree.census(sup)
    Lifecycle.schedule_tick(state)
    Lifecycle.schedule_memory(state)
    {:ok, state}
  end

  @impl true
  def handle_call(:await_ready, from, state) do
    case ready_status(state) do
      :waiting -> {:noreply, %{state | ready_waiters: [from | state.ready_waiters]}}
      reply -> {:reply, reply, state}
    end
  end

  def handle_call(:stats, _from, state), do: {:reply, Stats.of(state), state}
  def handle_call(:workers, _from, state), do: {:reply, Map.keys(state.workers), state}
  def handle_call(:supervisor, _from, state), do: {:reply, state.sup, state}
  def handle_call(:cluster_load, _from, state), do: {:reply, Cluster.load(state), state}

  def handle_call(:reload, from, state) do
    gen = state.generation + 1

    workers =
      Map.new(state.workers, fn
        {pid, %{retiring: nil} = w} -> {pid, %{w | due: w.due || :reload}}
        other -> other
      end)

    old = Enum.count(workers, fn {_, w} -> w.gen < gen end)
    waiters = if state.reload, do: state.reload.waiters, else: []

    reload = %{
      gen: gen,
      total: old + state.pending,
      stale_pending: state.pending,
      waiters: [from | waiters]
    }

    state = %{state | generation: gen, workers: workers, reload: reload}
    {:noreply, state |> Lifecycle.reconcile() |> Lifecycle.reload_progress()}
  end

  @impl true
  # The hot path of a call (no circuit breaker): pick, send. Keep it short.
  def handle_info({:"$snakepit_call", call}, %{breaker: nil} = state) do
    call = %{call | pool: state.name}

    case Queue.pick(call, state.workers) do
      nil -> {:noreply, enqueue(call, state)}
      worker -> {:noreply, dispatch(call, worker, state)}
    end
  end

  def handle_info({:"$snakepit_call", call}, state) do
    call = %{call | pool: state.name}

    case Breakers.admit(call, state, Call.now_ms()) do
      {:ok, state} ->
        route(call, state)

      {:refuse, error, state} ->
        Call.reply(call, {:error, error})
        {:noreply, state}
    end
  end

  # The other half of the hot path: a call answered ok.
  def handle_info({:"$snakepit_checkin", pid, ref}, %{breaker: nil} = state) do
    with %{^pid => w} <- state.workers,
         {:ok, w} <- Queue.remove(w, ref) do
      w = %{w | served: w.served + 1}
      state = %{state | workers: %{state.workers | pid => w}, calls: Map.delete(state.calls, ref)}

      case w do
        %{status: :ready, limit: limit, served: served} when limit != served ->
          {:noreply, serve_queue(pid, state)}

        _ ->
          checked_in(pid, w, state)
      end
    else
      _ -> {:noreply, state}
    end
  end

  def handle_info({:"$snakepit_checkin", pid, ref}, state), do: checkin(pid, ref, nil, state)

  def handle_info({:"$snakepit_checkin", pid, ref, kind}, state),
    do: checkin(pid, ref, kind, state)

  def handle_info({:"$snakepit_cancel", ref}, state) do
    case state.calls do
      %{^ref => pid} ->
        send(pid, {:"$snakepit_cancel", ref})

        state =
          if state.breaker,
            do: Breakers.caller_gave_up(ref, state, Call.now_ms()),
            else: state

        {:noreply, state}

      _ ->
        {cancelled, queue} = Queue.cancel(state.queue, ref)
        state = Enum.reduce(cancelled, %{state | queue: queue}, &dequeued/2)
        err = Error.new(:cancelled, "cancelled while waiting for a worker")
        Enum.each(cancelled, &Call.reply(&1, {:error, err}))
        {:noreply, Breakers.release(ref, state)}
    end
  end

  def handle_info({:"$snakepit_ready", pid, info}, state) do
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
    {:noreply, serve_queue(pid, state)}
  end

  def handle_info({:"$snakepit_capacity", pid, ready, methods}, state) do
    case state.workers do
      %{^pid => w} ->
        w = Queue.capacity(w, ready, methods)
        idem = for %{name: name, idempotent: true} <- methods, into: %{}, do: {name, true}
        w = %{w | idempotent: idem}
        {:noreply, serve_queue(pid, %{state | workers: %{state.workers | pid => w}})}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:"$snakepit_start_failed", pid, error}, state) do
    {w, state} = known(pid, state)
    state = %{state | workers: Map.put(state.workers, pid, %{w | status: :down})}
    state = if state.breaker, do: Breakers.start_failed(state, Call.now_ms()), else: state
    state = if w.ever_ready, do: state, else: answer_ready_waiters(%{state | start_error: error})
    {:noreply, Lifecycle.maybe_stop(pid, state)}
  end

  # The worker has already answered every call in flight on it (`:worker_crashed`,
  # `:worker_hung`, ...) but those it handed back for a retry; calls it is sent
  # from now on come back as requeues.
  def handle_info({:"$snakepit_down", pid, _error}, state) do
    case state.workers do
      %{^pid => w} ->
        refs = Map.keys(w.inflight)

        state =
          if state.breaker, do: Breakers.worker_down(refs, state, Call.now_ms()), else: state

        calls = Map.drop(state.calls, refs)
        w = %{w | status: :down, inflight: %{}, sync: 0, models: MapSet.new()}
        state = %{state | workers: %{state.workers | pid => w}, calls: calls}
        state = Lifecycle.maybe_stop(pid, %{state | restarts: state.restarts + 1})
        {:noreply, serve_all(state)}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:"$snakepit_requeue", pid, call}, state) do
    {:noreply, state |> hand_back(pid, call) |> serve_all()}
  end

  # An idempotent call whose worker crashed before answering: once more, elsewhere.
  def handle_info({:"$snakepit_retry", pid, call, _error}, state) do
    state = if state.breaker, do: Breakers.retried(call, state, Call.now_ms()), else: state
    call = Map.merge(call, %{retry: false, retried: true})
    state = hand_back(pid, call, state)
    {:noreply, serve_all(%{state | retried: state.retried + 1})}
  end

  def handle_info({:"$snakepit_models", pid, models}, state) do
    case state.workers do
      %{^pid => w} ->
        models = Queue.models(models)
        {:noreply, serve_all(%{state | workers: %{state.workers | pid => %{w | models: models}}})}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info(:"$snakepit_qexpire", state), do: {:noreply, expire_queue(state)}

  # An affinity call waited :affinity_wait for its busy holder: any worker may take it.
  def handle_info({:"$snakepit_spill", ref}, state) do
    case Queue.update(state.queue, ref, &Queue.spill/1) do
      {nil, _} -> {:noreply, state}
      {_call, queue} -> {:noreply, serve_all(%{state | queue: queue})}
    end
  end

  def handle_info(:"$snakepit_tick", state) do
    Lifecycle.schedule_tick(state)
    {:noreply, state |> Lifecycle.tick(Call.now_ms()) |> Lifecycle.reconcile() |> serve_all()}
  end

  def handle_info(:"$snakepit_memory_tick", state) do
    Lifecycle.schedule_memory(state)
    pool = self()

    for {pid, %{status: :ready, retiring: nil}} <- state.workers do
      spawn(fn ->
        case Worker.health_check(pid, 5_000) do
          {:ok, %{memory_mb: mb}} when is_number(mb) -> send(pool, {:"$snakepit_memory", pid, mb})
          _ -> :ok
        end
      end)
    end

    {:noreply, state}
  end

  def handle_info({:"$snakepit_memory", pid, mb}, state) do
    case state.workers do
      %{^pid => w} ->
        due =
          if w.due == nil and w.retiring == nil and mb > state.cfg.max_memory_mb,
            do: :max_memory,
            else: w.due

        state = %{state | workers: %{state.workers | pid => %{w | memory_mb: mb, due: due}}}
        {:noreply, if(due != w.due, do: Lifecycle.reconcile(state), else: state)}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:"$snakepit_census", count, highest}, state) do
    state = %{
      state
      | census: true,
        pending: max(count - map_size(state.workers), 0),
        next_n: max(state.next_n, highest + 1)
    }

    {:noreply, Lifecycle.reconcile(state)}
  end

  def handle_info({:"$snakepit_child", :start_failed, _reason}, state) do
    {:noreply, %{state | pending: max(state.pending - 1, 0)}}
  end

  def handle_info({:DOWN, mon, :process, pid, reason}, state) do
    case Map.pop(state.waiting, mon) do
      {nil, _} -> {:noreply, worker_gone(pid, reason, state)}
      # the caller of a queued call died: its call leaves the queue
      {ref, _} -> {:noreply, caller_gone(ref, state)}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  # --------------------------------------------------------------- routing

  defp route(call, state) do
    case Queue.pick(call, state.workers) do
      nil -> {:noreply, enqueue(call, state)}
      worker -> {:noreply, dispatch(call, worker, state)}
    end
  end

  defp enqueue(call, %{qlen: n, cfg: %{max_queue: max}} = state) when n >= max do
    details = %{queue_depth: n, max_queue: max}
    msg = "the pool's queue is full (#{n} calls waiting, max_queue: #{max})"
    Call.reply(call, {:error, Error.new(:overloaded, msg, details: details)})
    Breakers.release(call.ref, %{state | shed: state.shed + 1})
  end

  defp enqueue(call, state) do
    call = %{call | queued_at: System.monotonic_time(:microsecond)}

    if call.affinity != nil and state.cfg.affinity_wait != :infinity,
      do: Process.send_after(self(), {:"$snakepit_spill", call.ref}, state.cfg.affinity_wait)

    queued(Queue.push(state.queue, watch(call)), call, state)
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

  defp dequeued(call, state) do
    mon = Map.get(call, :mon)
    if mon, do: Process.demonitor(mon, [:flush])
    state = %{state | qlen: state.qlen - 1, waiting: Map.delete(state.waiting, mon)}
    queue_event(state, :out)
    state
  end

  defp caller_gone(ref, state) do
    {gone, queue} = Queue.cancel(state.queue, ref)
    state = Enum.reduce(gone, %{state | queue: queue}, &dequeued/2)
    Breakers.release(ref, state)
  end

  # A call a worker handed back (it went down first) goes to the front.
  defp hand_back(pid, call, state) do
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

    call = watch(%{call | queued_at: System.monotonic_time(:microsecond)})
    state = %{state | calls: Map.delete(state.calls, call.ref)}
    queued(Queue.requeue(state.queue, call), call, state)
  end

  defp checkin(pid, ref, kind, state) do
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
      _ -> {:noreply, state}
    end
  end

  defp checked_in(pid, w, state) do
    cond do
      w.served == w.limit ->
        {:noreply, serve_queue(pid, Lifecycle.make_due(pid, :max_calls, state))}

      w.status == :draining ->
        {:noreply, Lifecycle.maybe_stop(pid, state)}

      true ->
        {:noreply, serve_queue(pid, state)}
    end
  end

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

    spawn(fn ->
      try do
        with %{ready: ready} when is_map(ready) <- Worker.info(pid),
             {:ok, %{methods: methods}} when is_list(methods) <- Worker.describe(pid) do
          send(pool, {:"$snakepit_capacity", pid, ready, methods})
        end
      catch
        # the worker went away meanwhile: its next :ready asks again
        :exit, _ -> :ok
      end
    end)
  end

  defp dispatch(call, pid, state) do
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

  # Give worker `pid` the queued calls it has room for and may take, first come first.
  defp serve_queue(pid, state) do
    # Most checkins find nothing waiting: that costs one check here.
    if state.qlen == 0 do
      state
    else
      w = state.workers[pid]

      with true <- w != nil and Queue.room_for_any?(w),
           {call, queue} <- Queue.take(state.queue, w, state.workers) do
        state = dequeued(call, %{state | queue: queue})
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
  defp serve_all(state) do
    if state.qlen == 0 do
      state
    else
      {state, kept} =
        state.queue
        |> :queue.to_list()
        |> Enum.reduce({state, []}, fn call, {state, kept} ->
          cond do
            not alive?(call.caller) ->
              {dequeued(call, state), kept}

            pid = Queue.pick(call, state.workers) ->
              {dispatch(call, pid, dequeued(call, state)), kept}

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

  # ----------------------------------------------------- queue timeouts

  defp arm_expiry(%{qtimer: nil, cfg: %{queue_timeout: qt}} = state) when is_integer(qt),
    do: %{state | qtimer: Process.send_after(self(), :"$snakepit_qexpire", qt)}

  defp arm_expiry(state), do: state

  defp expire_queue(%{cfg: %{queue_timeout: qt}} = state) do
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

  # The worker GenServer itself ended: retired by us, or died (the supervisor
  # starts another).
  defp worker_gone(pid, reason, state) do
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
        state |> Lifecycle.reload_progress() |> Lifecycle.reconcile() |> serve_all()
    end
  end

  # ------------------------------------------------------------ readiness

  defp ready_status(state) do
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
