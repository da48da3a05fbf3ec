defmodule Snakepit.Worker do
  @moduledoc """
  A GenServer owning one Python worker process, over one Port.

  It launches `python -m snakepit_py worker TARGET ...` with the protocol on
  fds 3/4 (`{:packet, 4}`), waits for the `:ready` frame, sends calls tagged
  with ids and routes each terminal reply back to its caller.

  Every call gets exactly one terminal reply, whatever happens to the Python
  process. When it ends in any way (it exits, it is killed, its port closes
  with an error such as `:epipe`), every call in flight gets `{:error,
  %Snakepit.Error{kind: :worker_crashed}}` at once, quoting the last lines of
  its output, and a new process is started at once. Only a crash loop waits
  before restarting (see `:stable_after`). When the process stops answering
  health polls it is killed and replaced, and its calls get `:worker_hung`.
  A call that does not end within `:cancel_grace` of its cancel gets
  `:cancelled` and the process is killed and replaced.

  Pools start workers for you; start one yourself when you want to talk to a
  single Python process (run from `elixir_harness/`):

      iex> {:ok, w} = Snakepit.Worker.start_link(target: "../examples/hello_worker.py")
      iex> Snakepit.Worker.call(w, %{method: "add", args: [1, 2]})
      {:ok, 3}
      iex> Snakepit.Worker.stop(w)
      :ok

  ## Options

    * `:target` (required) - `path/worker.py`, `pkg.mod` or `pkg.mod:Class`
    * `:python` - the interpreter; default `$SNAKEPIT_PYTHON`, else the
      repository's `.venv/bin/python`, else `python3`
    * `:worker_id` - name used in logs and health reports
    * `:worker_opts` - CLI options for the worker, e.g. `[threads: 2]`
      becomes `--threads 2`
    * `:worker_args` - strings for the worker's own code, passed after `--`
      (`snakepit_py.worker_args()` in Python), e.g. `["--ray-address", "local"]`
    * `:cd`, `:env` - working directory and extra environment (`[{"K", "v"}]`)
    * `:start_timeout` - ms to wait for `:ready` (default 10_000)
    * `:shutdown_grace` - ms in-flight calls get to finish on stop (default 2_000)
    * `:cancel_grace` - ms a cancelled call gets to end before the Python
      process is killed as a last resort (default 5_000, or `:infinity`); the
      call then gets `:cancelled`, the other calls in flight `:worker_crashed`
    * `:health_interval` - ms between health polls (default 5_000), or `nil`
      for none (and no hang detection)
    * `:hung_after` - a process that leaves this many polls in a row unanswered
      (default 3: three intervals of silence) is killed and replaced; its
      calls get `:worker_hung`
    * `:output` - `:capture` (default) writes the process's stdout and stderr
      to a log file whose tail is quoted when it fails to start or crashes;
      `:inherit` leaves them on the BEAM's own stdout/stderr
    * `:stable_after` - ms after `:ready` from which a process counts as
      stable (default 500)
    * `:restart_window` - ms within which a crash follows the previous one to
      count towards a crash loop (default 10_000; 0: never back off)
    * `:name` - GenServer name
    * `:beam_functions` - functions Python code may call (protocol 1.1):
      `%{"fetch_user" => &MyApp.Users.fetch/1}`; `snakepit.beam.call("fetch_user",
      42)` in Python runs `MyApp.Users.fetch(42)` in a process of its own and
      returns its result. See "Calls from Python" below

  A crash loop: a process that crashes before `:ready` or less than
  `:stable_after` ms after it, within `:restart_window` of the previous crash.
  The first crash of a loop restarts at once, the next ones after 200, 400,
  800 ... ms (at most 5 s); a crash of a stable process starts afresh.

  When the worker is stopped (by its supervisor or `stop/1`) it sends
  `{:shutdown, grace}`, waits, closes the port, then sends SIGTERM and finally
  SIGKILL to the OS process: no orphans. If the owning BEAM process is killed
  outright, the closed port makes the Python process exit on its own.

  ## Calls from Python (`:beam_functions`)

  Each `{:beam_call}` from Python runs in its own process under a
  `Task.Supervisor` of this worker, never in the worker itself, with the
  timeout Python gave (it is killed when it runs out: `:timeout`). An
  exception, exit or throw becomes an `:exception` reply (`type` the
  exception's module, `"exit"` or `"throw"`); a wrong number of arguments
  `:bad_arguments`; a process killed from outside `:cancelled`. When Python
  stops waiting (its timeout, or its call was cancelled) the process is
  killed. When the Python process ends, every beam call's process is killed;
  when the worker stops, the calls get `:cancelled`. `beam_call_context/0`
  tells the function which worker and which call it serves.

  Such a process runs one beam call at a time. When its function returned
  and left the process as it found it (no links, monitors, messages, process
  dictionary entries, trapped exits, registered name or ETS table of its
  own; a heap under 512 KB), it waits for the next beam call rather than
  exit: starting a task costs more than the rest of a short beam call.
  Otherwise it exits and the next call gets a new process. At most 16 wait;
  one idle for 5 s hibernates.

  A BEAM function may call its own worker. With `--threads 1` (the default),
  while a sync method waits for that function, the worker's one sync thread
  is taken: a sync call from the function could never run. The worker
  refuses it at once with `:would_deadlock` rather than hang (this worker
  marks calls made from its BEAM functions' processes; docs/protocol.md §9).
  Async methods, or `threads: 2` and up, do not have the problem.

  Under a guard (the Python side's `guard_pid` in the ready info: the process
  the Port spawned, which forks the worker and sweeps its descendants when it
  dies) signals go to the worker's pid; the guard is killed only if it has not
  exited a second after the worker.
  """

  use GenServer
  require Logger

  alias Snakepit.{Call, Error, Options, OSProcess, Telemetry}
  alias Snakepit.Worker.{BeamCalls, Callers, Calls, Crash, Failure, Health, Launch, Notices, Wire}

  @type worker :: pid() | atom()

  @doc false
  def __protocol_atoms__, do: Wire.protocol_atoms()

  @doc false
  def child_spec(opts) do
    grace = Keyword.get(opts, :shutdown_grace, Options.default(:shutdown_grace))

    %{
      id: Keyword.get(opts, :id, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      shutdown: grace + 3_000
    }
  end

  @doc """
  Starts a worker. Without a `:pool` it returns once the Python process is
  ready, or `{:error, %Snakepit.Error{kind: :start_failed}}` quoting the tail of
  its output.
  """
  @spec start_link(keyword()) :: GenServer.on_start() | {:error, Error.t()}
  def start_link(opts) do
    opts = Options.worker!(opts)
    gen_opts = if name = opts[:name], do: [name: name], else: []

    with {:ok, pid} <- GenServer.start_link(__MODULE__, opts, gen_opts) do
      if opts[:pool] do
        {:ok, pid}
      else
        case await_ready(pid, opts[:start_timeout] + 1_000) do
          {:ok, _info} ->
            {:ok, pid}

          {:error, error} ->
            Process.unlink(pid)
            GenServer.stop(pid, :normal)
            {:error, error}
        end
      end
    end
  end

  @doc "Calls a method on this worker. Same request and options as `Snakepit.call/3`."
  @spec call(worker(), map(), keyword()) :: {:ok, term()} | {:error, Error.t()}
  def call(worker, request, opts \\ []) do
    Call.run(worker, Call.build!(request, opts, default_timeout: 5_000))
  end

  @doc "Asks the Python process for its health report (answered even when it is busy)."
  @spec health_check(worker(), timeout()) :: {:ok, map()} | {:error, Error.t()}
  def health_check(worker, timeout \\ 5_000), do: ask(worker, :health, timeout)

  @doc "Asks the Python process for its method catalogue."
  @spec describe(worker(), timeout()) :: {:ok, map()} | {:error, Error.t()}
  def describe(worker, timeout \\ 5_000), do: ask(worker, :describe, timeout)

  @doc "Waits until the Python process has sent `:ready`; returns its ready info."
  @spec await_ready(worker(), timeout()) :: {:ok, map()} | {:error, Error.t()}
  def await_ready(worker, timeout \\ Options.default(:start_timeout)),
    do: safe_call(worker, :await_ready, timeout)

  @doc """
  What the worker knows about itself: `worker_id`, `os_pid` (the Python
  worker's), `guard_pid` (its guard's, or nil), `status`, `restarts`,
  `backoff_ms` (the delay before the latest restart), `inflight`, `ready` info.
  """
  @spec info(worker()) :: map()
  def info(worker), do: GenServer.call(worker, :info)

  @doc """
  Inside a BEAM function serving a call from Python (`:beam_functions`): which
  worker and which call it serves, as a map with `worker` (the worker's pid),
  `worker_id`, `call_id` (the id of the call the Python code runs under, or
  nil outside one), `function` (its name) and `ref`; nil anywhere else. The
  same values are in the task's `Logger` metadata (`snakepit_worker`,
  `call_id`, `beam_function`).
  """
  @spec beam_call_context() :: map() | nil
  def beam_call_context, do: Process.get(:"$snakepit_beam_call")

  @doc "Stops the worker gracefully (see the module doc)."
  @spec stop(worker(), term(), timeout()) :: :ok
  def stop(worker, reason \\ :normal, timeout \\ :infinity),
    do: GenServer.stop(worker, reason, timeout)

  defp ask(worker, what, timeout), do: safe_call(worker, {:ask, what}, timeout)

  defp safe_call(worker, msg, timeout) do
    GenServer.call(worker, msg, timeout)
  catch
    :exit, {:timeout, _} -> {:error, Error.new(:timeout, "no answer within #{timeout} ms")}
    :exit, {reason, _} -> {:error, Call.down_error(worker, reason)}
  end

  # ---------------------------------------------------------------- server

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    id = opts[:worker_id]

    state = %{
      opts: opts,
      worker_id: id,
      pool: opts[:pool],
      log: if(opts[:output] == :capture, do: OSProcess.new_log(id || "worker")),
      port: nil,
      os_pid: nil,
      port_os_pid: nil,
      opened_at: nil,
      ready: nil,
      ready_at: nil,
      status: :down,
      next_id: 0,
      calls: %{},
      refs: %{},
      asks: %{},
      backlog: [],
      ready_waiters: [],
      crash_streak: 0,
      last_crash_at: nil,
      backoff_ms: 0,
      restarts: 0,
      health_poll: false,
      health_misses: 0,
      last_error: nil,
      models: nil
    }

    state = state |> Map.merge(Callers.new()) |> Map.merge(BeamCalls.new(opts))
    {:ok, open(state)}
  end

  defp open(state) do
    port = Launch.open(state.opts, state.worker_id, state.log)
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    Process.send_after(self(), {:start_timeout, port}, state.opts[:start_timeout])

    %{
      state
      | port: port,
        os_pid: os_pid,
        port_os_pid: os_pid,
        opened_at: System.monotonic_time(),
        status: :starting,
        ready: nil,
        ready_at: nil
    }
  end

  @impl true
  def handle_call(:await_ready, from, state) do
    case state.status do
      :ready -> {:reply, {:ok, state.ready}, state}
      _ -> {:noreply, %{state | ready_waiters: [from | state.ready_waiters]}}
    end
  end

  def handle_call({:ask, what}, from, %{status: :ready} = state) do
    {:noreply, Health.ask(what, from, state)}
  end

  def handle_call({:ask, _what}, _from, state) do
    {:reply, {:error, Error.new(:noproc, "worker #{name(state)} is #{state.status}")}, state}
  end

  def handle_call(:info, _from, state) do
    info = %{
      worker_id: name(state),
      os_pid: state.os_pid,
      guard_pid: guard_pid(state),
      status: state.status,
      restarts: state.restarts,
      backoff_ms: state.backoff_ms,
      inflight: map_size(state.calls),
      ready: state.ready,
      log: state.log
    }

    {:reply, info, state}
  end

  # The hot path of a call: {:"$snakepit_call", call} -> Calls.accept ->
  # Calls.dispatch -> Wire.send; then {port, {:data, bin}} -> Wire.decode ->
  # handle_frame -> Calls.finish -> Call.reply.
  @impl true
  def handle_info({port, {:data, bin}}, %{port: port} = state) do
    case Wire.decode(bin) do
      {:ok, frame} -> handle_frame(frame, state)
      :error -> {:noreply, Crash.undecodable(bin, state)}
    end
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    {:noreply, Crash.exited(status, state)}
  end

  # The port ended without an exit status (e.g. :epipe: a call was written as
  # the process died). It is as dead to us as if it had exited.
  def handle_info({:EXIT, port, reason}, %{port: port} = state) do
    {:noreply, Crash.port_closed(reason, state)}
  end

  def handle_info({:"$snakepit_call", call}, state) do
    {:noreply, Calls.accept(call, state)}
  end

  def handle_info({:"$snakepit_cancel", ref}, state) do
    {:noreply, Calls.cancel(ref, state)}
  end

  def handle_info({:DOWN, mon, :process, pid, reason}, state) do
    case BeamCalls.down(pid, mon, reason, state) do
      {:ok, state} -> {:noreply, state}
      :error -> {:noreply, Calls.caller_down(state, pid, mon)}
    end
  end

  # (1.1) a BEAM function's task replied, or its timeout ran out (§9)
  def handle_info({:"$snakepit_beam_done", port, ref, bin, reuse?}, state) do
    {:noreply, BeamCalls.done(port, ref, bin, reuse?, state)}
  end

  def handle_info({:"$snakepit_beam_timeout", port, ref}, state) do
    {:noreply, BeamCalls.timeout(port, ref, state)}
  end

  def handle_info({:"$snakepit_credit", ref, n}, state) do
    case state.refs do
      %{^ref => id} -> Wire.send(state.port, {:credit, id, n})
      _ -> :ok
    end

    {:noreply, state}
  end

  # One poll in flight at a time; each tick that finds it still unanswered is a miss.
  def handle_info({:"$snakepit_health_tick", port}, %{port: port, status: :ready} = state) do
    {:noreply, Health.tick(state)}
  end

  def handle_info({:start_timeout, port}, %{port: port, status: :starting} = state) do
    timeout = state.opts[:start_timeout]
    {:noreply, Crash.never_ready("did not send :ready within #{timeout} ms", state)}
  end

  # The last step of the ladder (soft cancel, interrupt: Python's; kill: ours).
  def handle_info({:cancel_deadline, port, id}, %{port: port} = state) do
    case Map.pop(state.calls, id) do
      {nil, _} -> {:noreply, state}
      {call, calls} -> {:noreply, Crash.cancel_ignored(id, call, %{state | calls: calls})}
    end
  end

  def handle_info(:restart, %{status: :down} = state) do
    state = %{state | restarts: state.restarts + 1}

    Telemetry.execute(
      [:snakepit, :worker, :restarted],
      %{
        restarts: state.restarts,
        backoff: System.convert_time_unit(state.backoff_ms, :millisecond, :native)
      },
      %{
        pool: state.pool,
        worker: self(),
        worker_id: name(state),
        reason: state.last_error && state.last_error.kind
      }
    )

    {:noreply, open(state)}
  end

  def handle_info(_stale, state), do: {:noreply, state}

  # ---------------------------------------------------------------- frames

  defp handle_frame({:ok, id, result}, state),
    do: {:noreply, Calls.finish(id, {:ok, result}, state)}

  defp handle_frame({:error, id, error}, state) when is_integer(id),
    do: {:noreply, Calls.finish(id, {:error, Error.from_wire(error)}, state)}

  defp handle_frame({:chunk, id, seq, data}, state) do
    case state.calls do
      %{^id => %{stream: true} = call} -> Call.reply(call, {:chunk, self(), seq, data})
      _ -> :ok
    end

    {:noreply, state}
  end

  defp handle_frame({:ready, info}, %{status: :starting} = state) when is_map(info) do
    if info[:protocol] == 1 do
      {:noreply, ready(info, state)}
    else
      why = "speaks protocol #{inspect(info[:protocol])}, expected 1"
      {:noreply, Crash.never_ready(why, state)}
    end
  end

  defp handle_frame({what, id, answer}, state) when what in [:health, :describe],
    do: {:noreply, Health.answer(what, id, answer, state)}

  defp handle_frame({:beam_call, ref, name, args, opts}, state),
    do: {:noreply, BeamCalls.start(ref, name, args, opts, state)}

  defp handle_frame({:beam_cancel, ref}, state),
    do: {:noreply, BeamCalls.cancel(ref, state)}

  defp handle_frame({:event, "loaded_models", models}, state) do
    {:noreply, Health.notify_models(%{loaded_models: models}, state)}
  end

  defp handle_frame({:event, event, data} = frame, state) do
    Telemetry.execute(
      [:snakepit, :worker, :event],
      %{system_time: System.system_time()},
      %{pool: state.pool, worker: self(), worker_id: name(state), name: event, data: data}
    )

    Notices.log(frame, name(state))
    {:noreply, state}
  end

  defp handle_frame(other, state) do
    Notices.log(other, name(state))
    {:noreply, state}
  end

  # -------------------------------------------------------------- lifecycle

  defp ready(info, state) do
    state = %{
      state
      | status: :ready,
        ready: info,
        ready_at: Call.now_ms(),
        os_pid: info[:pid] || state.os_pid,
        health_poll: false,
        health_misses: 0
    }

    state = %{state | worker_id: state.worker_id || info[:worker_id]}
    state = BeamCalls.announce(info, state)

    Telemetry.execute(
      [:snakepit, :worker, :ready],
      %{
        startup_time: System.monotonic_time() - state.opened_at,
        system_time: System.system_time()
      },
      %{
        pool: state.pool,
        worker: self(),
        worker_id: name(state),
        os_pid: state.os_pid,
        restarts: state.restarts
      }
    )

    Health.schedule(state)
    for from <- state.ready_waiters, do: GenServer.reply(from, {:ok, info})
    if state.pool, do: send(state.pool, {:"$snakepit_ready", self(), public_info(state)})
    backlog = Enum.reverse(state.backlog)
    Enum.reduce(backlog, %{state | ready_waiters: [], backlog: []}, &Calls.dispatch/2)
  end

  defp public_info(state) do
    %{
      worker_id: name(state),
      os_pid: state.os_pid,
      guard_pid: guard_pid(state),
      restarts: state.restarts
    }
  end

  # The process the Port spawned, when it is not the worker itself.
  defp guard_pid(%{port_os_pid: port_pid, os_pid: os_pid}) when port_pid != os_pid, do: port_pid
  defp guard_pid(_state), do: nil

  defp name(state), do: Failure.name(state)

  # ------------------------------------------------------------------ stop

  @impl true
  def terminate(_reason, state) do
    state = state |> BeamCalls.stop() |> stop_python()
    error = Error.new(:shutting_down, "worker #{name(state)} stopped")
    Calls.fail_all(error, state)
    Snakepit.Metrics.Store.worker_stopped()

    for {_id, {_what, from}} <- state.asks,
        from != :poll,
        do: GenServer.reply(from, {:error, error})

    if state.log, do: File.rm(state.log)
    :ok
  end

  # muontrap's escalation, by hand: ask, wait, then close, TERM, KILL
  # (OSProcess.terminate/2). Under a guard the worker gets the signals and the
  # guard a last look.
  defp stop_python(%{port: nil} = state), do: state

  defp stop_python(state) do
    grace = state.opts[:shutdown_grace]

    state =
      if state.status == :ready do
        Wire.send(state.port, {:shutdown, grace})
        drain(state, Call.now_ms() + grace + 500)
      else
        state
      end

    OSProcess.terminate(state.port, {state.os_pid, state.port_os_pid})
    %{state | port: nil}
  end

  # Keep answering callers until the process exits or the deadline passes.
  defp drain(%{port: port} = state, deadline) do
    receive do
      {^port, {:exit_status, _}} ->
        %{state | port: nil}

      {:EXIT, ^port, _reason} ->
        %{state | port: nil}

      {^port, {:data, bin}} ->
        state =
          case Wire.decode(bin) do
            {:ok, frame} -> frame |> handle_frame(state) |> elem(1)
            :error -> state
          end

        drain(state, deadline)
    after
      max(deadline - Call.now_ms(), 0) -> state
    end
  end
end
