defmodule Snakepit.Pool do
  @moduledoc """
  A supervised pool of Python workers.

      {:ok, _} = Snakepit.Pool.start_link(name: :ml, target: "ml_worker.py", size: 3)
      {:ok, result} = Snakepit.call(:ml, %{method: "predict", args: ["gpt2", "hi"]})

  Each call goes to a worker with room for it (the one with the fewest calls
  in flight, then the one used longest ago); when no worker has room it waits
  in a FIFO queue. A worker whose Python process dies fails every call in
  flight on it at once (`:worker_crashed`) and comes back by itself; the pool
  routes around it meanwhile, and calls waiting in the queue go to the other
  workers or to the replacement. A worker that stops answering its health
  polls is killed and replaced the same way (`:worker_hung`).

  ## Calls at once

  A worker says in its `:ready` info how many sync calls it runs at once
  (`threads`, from `worker_opts: [threads: n]`) and how many calls it accepts
  at once (`max_inflight`); its catalogue says which methods are `async`. The
  pool gives a worker a sync call while fewer than `threads` sync calls are in
  flight on it, and an async call while fewer than `max_inflight` calls are.
  So a worker started with the default `--threads 1` gets one sync call at a
  time: a call never waits behind another inside a busy Python process while
  another worker could run it. Until a new worker's catalogue has arrived
  (just after `:ready`) it takes one call at a time.

  `pipeline: n` lets up to `n` more sync calls wait inside each worker beyond
  its `threads`: the Python process reads the next call while it answers the
  one before, which for short calls is worth much more throughput than more
  threads (see `docs/benchmarks.md`). The price: a call may then wait behind a
  long one inside a worker while another worker is idle. Use it for short
  calls of even length.

  ## Affinity

  `Snakepit.call(pool, request, affinity: key)` sends the call to a worker
  whose Python side reported `key` as loaded — from a health poll (every
  `:health_interval` ms) or a pushed `"loaded_models"` event — waiting for
  that worker if it is busy. When no live worker has `key`, any worker takes
  the call.

  ## Options

    * `:name` (required) - the atom the pool is registered under
    * `:target` (required) - the worker TARGET, e.g. `"path/worker.py"`
    * `:size` - number of Python processes (default: schedulers online)
    * `:python` - the interpreter (see `Snakepit.Worker`)
    * `:worker_opts` - CLI options for each Python worker, e.g. `[threads: 2]`
    * `:pipeline` - sync calls a worker may hold beyond its `threads`
      (default 0; see "Calls at once")
    * `:worker_args` - strings after `--` for the worker's own code
    * `:health_interval` - ms between each worker's health polls (default
      5_000), or `nil` for none; also what hang detection counts in
    * `:hung_after`, `:start_timeout`, `:shutdown_grace`, `:cancel_grace`,
      `:stable_after`, `:restart_window`, `:output`, `:cd`, `:env` - passed to
      every `Snakepit.Worker` (see its options)

  `start_link/1` returns once every worker is ready, or
  `{:error, %Snakepit.Error{kind: :start_failed}}` if one could not start.
  """

  use GenServer

  alias Snakepit.{Call, Error, Options, Worker}
  alias Snakepit.Pool.Queue

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

    with {:ok, sup} <- Supervisor.start_link(__MODULE__.Tree, opts) do
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
  Pool statistics: `workers`, `ready`, `busy` (workers with at least one call
  in flight), `idle` (ready, none in flight), `down`, `inflight` (calls in
  flight), `queue_depth`, `avg_queue_time_ms` (over every call dispatched),
  `served`, `restarts` and `worker_details` (one map per worker: `worker_id`,
  `os_pid`, `guard_pid`, `status` (`:idle`, `:busy` or `:down`), `inflight`,
  `threads`, `max_inflight`, `served`, `loaded_models`).
  """
  @spec stats(name()) :: map()
  def stats(pool), do: GenServer.call(pool, :stats)

  @doc "The pids of the pool's workers (for `Snakepit.Worker` functions)."
  @spec workers(name()) :: [pid()]
  def workers(pool), do: GenServer.call(pool, :workers)

  # ---------------------------------------------------------------- server

  @impl true
  def init({opts, sup}) do
    {:ok,
     %{
       name: opts[:name],
       sup: sup,
       size: opts[:size],
       pipeline: opts[:pipeline],
       workers: %{},
       calls: %{},
       queue: Queue.new(),
       clock: 0,
       dispatched: 0,
       queue_time_us: 0,
       restarts: 0,
       start_error: nil,
       ready_waiters: []
     }}
  end

  @impl true
  def handle_call(:await_ready, from, state) do
    case ready_status(state) do
      :waiting -> {:noreply, %{state | ready_waiters: [from | state.ready_waiters]}}
      reply -> {:reply, reply, state}
    end
  end

  def handle_call(:stats, _from, state), do: {:reply, stats_of(state), state}
  def handle_call(:workers, _from, state), do: {:reply, Map.keys(state.workers), state}
  def handle_call(:supervisor, _from, state), do: {:reply, state.sup, state}

  @impl true
  def handle_info({:"$snakepit_call", call}, state) do
    call = %{call | pool: state.name}

    case Queue.pick(call, state.workers) do
      nil ->
        call = %{call | queued_at: System.monotonic_time(:microsecond)}
        {:noreply, %{state | queue: Queue.push(state.queue, call)}}

      worker ->
        {:noreply, dispatch(call, worker, state)}
    end
  end

  def handle_info({:"$snakepit_checkin", pid, ref}, state) do
    with %{^pid => w} <- state.workers,
         {:ok, w} <- Queue.remove(w, ref) do
      w = %{w | served: w.served + 1}

      state = %{
        state
        | workers: %{state.workers | pid => w},
          calls: Map.delete(state.calls, ref)
      }

      {:noreply, serve_queue(pid, state)}
    else
      _ -> {:noreply, state}
    end
  end

  def handle_info({:"$snakepit_cancel", ref}, state) do
    case state.calls do
      %{^ref => pid} ->
        send(pid, {:"$snakepit_cancel", ref})
        {:noreply, state}

      _ ->
        {cancelled, queue} = Queue.cancel(state.queue, ref)
        err = Error.new(:cancelled, "cancelled while waiting for a worker")
        Enum.each(cancelled, &Call.reply(&1, {:error, err}))
        {:noreply, %{state | queue: queue}}
    end
  end

  def handle_info({:"$snakepit_ready", pid, info}, state) do
    w = Map.get_lazy(state.workers, pid, fn -> new_worker(pid, state) end)
    # a fresh process: nothing of the old one is in flight (its :down said so)
    state = %{state | calls: Map.drop(state.calls, Map.keys(w.inflight))}

    w =
      %{w | status: :ready, inflight: %{}, sync: 0, ever_ready: true}
      |> Map.merge(Map.take(info, [:worker_id, :os_pid, :guard_pid]))

    ask_capacity(pid)
    state = %{state | workers: Map.put(state.workers, pid, w)}
    state = answer_ready_waiters(state)
    {:noreply, serve_queue(pid, state)}
  end

  def handle_info({:"$snakepit_capacity", pid, ready, methods}, state) do
    case state.workers do
      %{^pid => w} ->
        w = Queue.capacity(w, ready, methods)
        {:noreply, serve_queue(pid, %{state | workers: %{state.workers | pid => w}})}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:"$snakepit_start_failed", pid, error}, state) do
    w = Map.get_lazy(state.workers, pid, fn -> new_worker(pid, state) end)
    state = %{state | workers: Map.put(state.workers, pid, %{w | status: :down})}

    state = if w.ever_ready, do: state, else: answer_ready_waiters(%{state | start_error: error})

    {:noreply, state}
  end

  # The worker has already answered every call in flight on it (`:worker_crashed`,
  # `:worker_hung`, ...); calls it is sent from now on come back as requeues.
  def handle_info({:"$snakepit_down", pid, _error}, state) do
    case state.workers do
      %{^pid => w} ->
        calls = Map.drop(state.calls, Map.keys(w.inflight))
        w = %{w | status: :down, inflight: %{}, sync: 0, models: MapSet.new()}
        state = %{state | workers: %{state.workers | pid => w}, calls: calls}
        {:noreply, serve_all(%{state | restarts: state.restarts + 1})}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:"$snakepit_requeue", pid, call}, state) do
    state =
      with %{^pid => w} <- state.workers,
           {:ok, w} <- Queue.remove(w, call.ref) do
        %{state | workers: %{state.workers | pid => %{w | status: :down}}}
      else
        _ -> state
      end

    state = %{
      state
      | calls: Map.delete(state.calls, call.ref),
        queue:
          Queue.requeue(state.queue, %{call | queued_at: System.monotonic_time(:microsecond)})
    }

    {:noreply, serve_all(state)}
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

  def handle_info({:DOWN, _mref, :process, pid, reason}, state) do
    # The worker GenServer itself died (not just its Python process).
    case Map.pop(state.workers, pid) do
      {nil, _} ->
        {:noreply, state}

      {w, workers} ->
        refs = Map.keys(w.inflight)
        error = Call.down_error(pid, reason)
        Enum.each(refs, &Call.reply(%{ref: &1}, {:error, error}))
        calls = Map.drop(state.calls, refs)
        {:noreply, serve_all(%{state | workers: workers, calls: calls})}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  # --------------------------------------------------------------- routing

  defp new_worker(pid, state) do
    Process.monitor(pid)

    Map.merge(Queue.new_worker(state.pipeline), %{
      worker_id: nil,
      os_pid: nil,
      guard_pid: nil,
      served: 0,
      ever_ready: false
    })
  end

  # How many calls the worker takes at once comes from its ready info and its
  # catalogue (which methods are async). Both are asked for off the pool's
  # process; until the answer comes, the worker takes one call at a time.
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
    send(pid, {:"$snakepit_call", call})
    # a call dispatched as it arrives never waited (and costs no clock read)
    waited = if call.queued_at, do: System.monotonic_time(:microsecond) - call.queued_at, else: 0

    w = state.workers[pid]
    w = %{Queue.add(w, call, Queue.kind(w, call.method)) | last_used: state.clock + 1}

    %{
      state
      | workers: %{state.workers | pid => w},
        calls: Map.put(state.calls, call.ref, pid),
        clock: state.clock + 1,
        dispatched: state.dispatched + 1,
        queue_time_us: state.queue_time_us + waited
    }
  end

  # Give worker `pid` the queued calls it has room for and may take, first come first.
  defp serve_queue(pid, state) do
    # Most checkins find nothing waiting: that costs one check here, not a
    # call into Queue (a Queue.t() is an Erlang :queue).
    if :queue.is_empty(state.queue) do
      state
    else
      w = state.workers[pid]

      with true <- w != nil and Queue.room_for_any?(w),
           {call, queue} <- Queue.take(state.queue, w, state.workers) do
        state = %{state | queue: queue}
        # a caller that died while queued no longer wants its call run
        state = if Process.alive?(call.caller), do: dispatch(call, pid, state), else: state
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
    if :queue.is_empty(state.queue) do
      state
    else
      {state, kept} =
        state.queue
        |> :queue.to_list()
        |> Enum.reduce({state, []}, fn call, {state, kept} ->
          cond do
            not Process.alive?(call.caller) -> {state, kept}
            pid = Queue.pick(call, state.workers) -> {dispatch(call, pid, state), kept}
            true -> {state, [call | kept]}
          end
        end)

      %{state | queue: :queue.from_list(Enum.reverse(kept))}
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

  defp stats_of(state) do
    statuses = Map.new(state.workers, fn {pid, w} -> {pid, status_of(w)} end)
    count = fn status -> Enum.count(statuses, fn {_, s} -> s == status end) end

    %{
      workers: state.size,
      ready: count.(:idle) + count.(:busy),
      busy: count.(:busy),
      idle: count.(:idle),
      down: state.size - count.(:idle) - count.(:busy),
      inflight: map_size(state.calls),
      queue_depth: Queue.size(state.queue),
      avg_queue_time_ms:
        if(state.dispatched == 0, do: 0.0, else: state.queue_time_us / state.dispatched / 1000),
      served: state.workers |> Map.values() |> Enum.map(& &1.served) |> Enum.sum(),
      restarts: state.restarts,
      worker_details:
        state.workers
        |> Enum.sort_by(fn {_, w} -> to_string(w.worker_id) end)
        |> Enum.map(fn {pid, w} ->
          %{
            worker_id: w.worker_id,
            os_pid: w.os_pid,
            guard_pid: w.guard_pid,
            status: statuses[pid],
            inflight: map_size(w.inflight),
            threads: w.threads,
            max_inflight: w.max_inflight,
            served: w.served,
            loaded_models: w.models |> MapSet.to_list() |> Enum.sort()
          }
        end)
    }
  end

  # :busy: at least one call in flight (it may still have room for more).
  defp status_of(%{status: :down}), do: :down
  defp status_of(%{inflight: inflight}) when map_size(inflight) > 0, do: :busy
  defp status_of(_w), do: :idle

  defmodule Tree do
    @moduledoc false
    # rest_for_one: the routing server first, then the workers; if the server
    # restarts, the workers restart with it and announce themselves again.
    use Supervisor

    def init(opts) do
      name = opts[:name]
      label = name |> inspect() |> String.trim_leading(":")
      worker_opts = Keyword.take(opts, [:target | Snakepit.Options.worker_keys()])

      server = %{
        id: :server,
        start: {GenServer, :start_link, [Snakepit.Pool, {opts, self()}, [name: name]]}
      }

      workers =
        for i <- 1..opts[:size] do
          Supervisor.child_spec(
            {Worker, [id: {Worker, i}, pool: name, worker_id: "#{label}-#{i}"] ++ worker_opts},
            id: {Worker, i}
          )
        end

      Supervisor.init([server | workers], strategy: :rest_for_one)
    end
  end
end
