defmodule Snakepit.Pool do
  @moduledoc """
  A supervised pool of Python workers.

      {:ok, _} = Snakepit.Pool.start_link(name: :ml, target: "ml_worker.py", size: 3)
      {:ok, result} = Snakepit.call(:ml, %{method: "predict", args: ["gpt2", "hi"]})

  Each call goes to an idle worker; when every worker is busy it waits in a
  FIFO queue. A worker whose Python process dies fails its in-flight call at
  once (`:worker_crashed`) and comes back by itself; the pool routes around it
  meanwhile, and calls waiting in the queue go to the other workers or to the
  replacement. A worker that stops answering its health polls is killed and
  replaced the same way (`:worker_hung`).

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
    opts = Options.pool!(opts)
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
  Pool statistics: `workers`, `ready`, `busy`, `idle`, `down`, `queue_depth`,
  `avg_queue_time_ms` (over every call dispatched), `served`, `restarts` and
  `worker_details` (one map per worker: `worker_id`, `os_pid`, `guard_pid`, `status`,
  `served`, `loaded_models`).
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
    case state.workers do
      %{^pid => %{call: %{ref: ^ref}} = w} ->
        w = %{w | status: :idle, call: nil, served: w.served + 1}

        state = %{
          state
          | workers: %{state.workers | pid => w},
            calls: Map.delete(state.calls, ref)
        }

        {:noreply, serve_queue(pid, state)}

      _ ->
        {:noreply, state}
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
    w =
      state.workers
      |> Map.get_lazy(pid, fn -> new_worker(pid) end)
      |> Map.merge(%{status: :idle, call: nil})
      |> Map.merge(Map.take(info, [:worker_id, :os_pid, :guard_pid]))
      |> Map.put(:ever_ready, true)

    state = %{state | workers: Map.put(state.workers, pid, w)}
    state = answer_ready_waiters(state)
    {:noreply, serve_queue(pid, state)}
  end

  def handle_info({:"$snakepit_start_failed", pid, error}, state) do
    w = Map.get_lazy(state.workers, pid, fn -> new_worker(pid) end)
    state = %{state | workers: Map.put(state.workers, pid, %{w | status: :down})}

    state = if w.ever_ready, do: state, else: answer_ready_waiters(%{state | start_error: error})

    {:noreply, state}
  end

  def handle_info({:"$snakepit_down", pid, _error}, state) do
    case state.workers do
      %{^pid => w} ->
        calls = if w.call, do: Map.delete(state.calls, w.call.ref), else: state.calls
        w = %{w | status: :down, call: nil, models: MapSet.new()}
        state = %{state | workers: %{state.workers | pid => w}, calls: calls}
        {:noreply, serve_all(%{state | restarts: state.restarts + 1})}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:"$snakepit_requeue", pid, call}, state) do
    state =
      case state.workers do
        %{^pid => %{call: %{ref: ref}} = w} when ref == call.ref ->
          %{state | workers: %{state.workers | pid => %{w | call: nil, status: :down}}}

        _ ->
          state
      end

    state = %{
      state
      | calls: Map.delete(state.calls, call.ref),
        queue:
          Queue.push_front(state.queue, %{call | queued_at: System.monotonic_time(:microsecond)})
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
        if w.call, do: Call.reply(w.call, {:error, Call.down_error(pid, reason)})
        calls = if w.call, do: Map.delete(state.calls, w.call.ref), else: state.calls
        {:noreply, serve_all(%{state | workers: workers, calls: calls})}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  # --------------------------------------------------------------- routing

  defp new_worker(pid) do
    Process.monitor(pid)

    %{
      status: :down,
      call: nil,
      worker_id: nil,
      os_pid: nil,
      guard_pid: nil,
      served: 0,
      last_used: 0,
      models: MapSet.new(),
      ever_ready: false
    }
  end

  defp dispatch(call, pid, state) do
    send(pid, {:"$snakepit_call", call})
    # a call dispatched as it arrives never waited (and costs no clock read)
    waited = if call.queued_at, do: System.monotonic_time(:microsecond) - call.queued_at, else: 0

    w = %{state.workers[pid] | status: :busy, call: call, last_used: state.clock + 1}

    %{
      state
      | workers: %{state.workers | pid => w},
        calls: Map.put(state.calls, call.ref, pid),
        clock: state.clock + 1,
        dispatched: state.dispatched + 1,
        queue_time_us: state.queue_time_us + waited
    }
  end

  # Give the idle worker `pid` the first queued call it may take.
  defp serve_queue(pid, state) do
    w = state.workers[pid]

    # Most checkins find nothing waiting: that costs one check here, not a
    # call into Queue (a Queue.t() is an Erlang :queue).
    if w && w.status == :idle && not :queue.is_empty(state.queue) do
      case Queue.take(state.queue, w, state.workers) do
        nil ->
          state

        {call, queue} ->
          # a caller that died while queued no longer wants its call run
          if Process.alive?(call.caller),
            do: dispatch(call, pid, %{state | queue: queue}),
            else: serve_queue(pid, %{state | queue: queue})
      end
    else
      state
    end
  end

  defp serve_all(state) do
    state.workers |> Queue.serve_order() |> Enum.reduce(state, &serve_queue/2)
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
    count = fn status -> Enum.count(state.workers, fn {_, w} -> w.status == status end) end

    %{
      workers: state.size,
      ready: count.(:idle) + count.(:busy),
      busy: count.(:busy),
      idle: count.(:idle),
      down: state.size - count.(:idle) - count.(:busy),
      queue_depth: Queue.size(state.queue),
      avg_queue_time_ms:
        if(state.dispatched == 0, do: 0.0, else: state.queue_time_us / state.dispatched / 1000),
      served: state.workers |> Map.values() |> Enum.map(& &1.served) |> Enum.sum(),
      restarts: state.restarts,
      worker_details:
        state.workers
        |> Map.values()
        |> Enum.sort_by(&to_string(&1.worker_id))
        |> Enum.map(fn w ->
          %{
            worker_id: w.worker_id,
            os_pid: w.os_pid,
            guard_pid: w.guard_pid,
            status: w.status,
            served: w.served,
            loaded_models: w.models |> MapSet.to_list() |> Enum.sort()
          }
        end)
    }
  end

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
