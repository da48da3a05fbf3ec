defmodule Snakepit.Pool do
  @moduledoc """
  A supervised pool of Python workers.

      iex> {:ok, _} = Snakepit.Pool.start_link(name: :hello, target: "../examples/hello_worker.py", size: 3)
      iex> Snakepit.call(:hello, %{method: "add", args: [1, 2]})
      {:ok, 3}
      iex> Snakepit.Pool.stats(:hello).workers
      3

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

  alias Snakepit.{Call, Error, Options}

  alias Snakepit.Pool.{
    Breakers,
    Cluster,
    Dispatch,
    Lifecycle,
    Queue,
    Roster,
    Stats,
    Tree,
    Waiting
  }

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
  #
  # The callbacks only say which message means what; the work on the state
  # map is done in Pool.Dispatch (calls onto workers), Pool.Waiting (the
  # queue), Pool.Roster (what workers report), Pool.Lifecycle (recycling,
  # reload, scaling) and Pool.Stats. The hot path (a call without a breaker
  # sent at once, an ok checkin) stays written out in its clauses.

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
    case Roster.ready_status(state) do
      :waiting -> {:noreply, %{state | ready_waiters: [from | state.ready_waiters]}}
      reply -> {:reply, reply, state}
    end
  end

  def handle_call(:stats, _from, state), do: {:reply, Stats.of(state), state}
  def handle_call(:workers, _from, state), do: {:reply, Map.keys(state.workers), state}
  def handle_call(:supervisor, _from, state), do: {:reply, state.sup, state}
  def handle_call(:cluster_load, _from, state), do: {:reply, Cluster.load(state), state}
  def handle_call(:reload, from, state), do: {:noreply, Lifecycle.reload(from, state)}

  @impl true
  # The hot path of a call (no circuit breaker): pick, send. Keep it short.
  def handle_info({:"$snakepit_call", call}, %{breaker: nil} = state) do
    call = %{call | pool: state.name}

    case Queue.pick(call, state.workers) do
      nil -> {:noreply, Waiting.enqueue(call, state)}
      worker -> {:noreply, Dispatch.dispatch(call, worker, state)}
    end
  end

  def handle_info({:"$snakepit_call", call}, state) do
    call = %{call | pool: state.name}

    case Breakers.admit(call, state, Call.now_ms()) do
      {:ok, state} ->
        {:noreply, Dispatch.route(call, state)}

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
          {:noreply, Dispatch.serve_queue(pid, state)}

        _ ->
          {:noreply, Dispatch.checked_in(pid, w, state)}
      end
    else
      _ -> {:noreply, state}
    end
  end

  def handle_info({:"$snakepit_checkin", pid, ref}, state),
    do: {:noreply, Dispatch.checkin(pid, ref, nil, state)}

  def handle_info({:"$snakepit_checkin", pid, ref, kind}, state),
    do: {:noreply, Dispatch.checkin(pid, ref, kind, state)}

  def handle_info({:"$snakepit_cancel", ref}, state),
    do: {:noreply, Dispatch.cancel(ref, state)}

  def handle_info({:"$snakepit_ready", pid, info}, state),
    do: {:noreply, Roster.ready(pid, info, state)}

  def handle_info({:"$snakepit_capacity", pid, ready, methods}, state),
    do: {:noreply, Roster.capacity(pid, ready, methods, state)}

  def handle_info({:"$snakepit_start_failed", pid, error}, state),
    do: {:noreply, Roster.start_failed(pid, error, state)}

  def handle_info({:"$snakepit_down", pid, _error}, state),
    do: {:noreply, Roster.down(pid, state)}

  def handle_info({:"$snakepit_requeue", pid, call}, state),
    do: {:noreply, state |> Dispatch.hand_back(pid, call) |> Dispatch.serve_all()}

  def handle_info({:"$snakepit_retry", pid, call, _error}, state),
    do: {:noreply, Dispatch.retry(pid, call, state)}

  def handle_info({:"$snakepit_models", pid, models}, state),
    do: {:noreply, Roster.models(pid, models, state)}

  def handle_info(:"$snakepit_qexpire", state), do: {:noreply, Waiting.expire(state)}
  def handle_info({:"$snakepit_spill", ref}, state), do: {:noreply, Dispatch.spill(ref, state)}

  def handle_info(:"$snakepit_tick", state) do
    Lifecycle.schedule_tick(state)

    {:noreply,
     state |> Lifecycle.tick(Call.now_ms()) |> Lifecycle.reconcile() |> Dispatch.serve_all()}
  end

  def handle_info(:"$snakepit_memory_tick", state), do: {:noreply, Lifecycle.poll_memory(state)}

  def handle_info({:"$snakepit_memory", pid, mb}, state),
    do: {:noreply, Lifecycle.memory(pid, mb, state)}

  def handle_info({:"$snakepit_census", count, highest}, state),
    do: {:noreply, Roster.census(count, highest, state)}

  def handle_info({:"$snakepit_child", :start_failed, _reason}, state),
    do: {:noreply, Roster.child_failed(state)}

  def handle_info({:DOWN, mon, :process, pid, reason}, state) do
    case Map.pop(state.waiting, mon) do
      {nil, _} -> {:noreply, Roster.gone(pid, reason, state)}
      # the caller of a queued call died: its call leaves the queue
      {ref, _} -> {:noreply, Waiting.caller_gone(ref, state)}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}
end
