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
  single Python process:

      {:ok, w} = Snakepit.Worker.start_link(target: "worker.py")
      {:ok, 3} = Snakepit.Worker.call(w, %{method: "add", args: [1, 2]})

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

  A crash loop: a process that crashes before `:ready` or less than
  `:stable_after` ms after it, within `:restart_window` of the previous crash.
  The first crash of a loop restarts at once, the next ones after 200, 400,
  800 ... ms (at most 5 s); a crash of a stable process starts afresh.

  When the worker is stopped (by its supervisor or `stop/1`) it sends
  `{:shutdown, grace}`, waits, closes the port, then sends SIGTERM and finally
  SIGKILL to the OS process: no orphans. If the owning BEAM process is killed
  outright, the closed port makes the Python process exit on its own.

  Under a guard (the Python side's `guard_pid` in the ready info: the process
  the Port spawned, which forks the worker and sweeps its descendants when it
  dies) signals go to the worker's pid; the guard is killed only if it has not
  exited a second after the worker.
  """

  use GenServer
  require Logger

  alias Snakepit.{Call, Error, OSProcess}

  @default_start_timeout 10_000
  @default_grace 2_000
  @default_cancel_grace 5_000
  @default_health_interval 5_000
  @default_hung_after 3
  @default_stable_after 500
  @backoff_max 5_000
  @max_callers 1_024
  # bytes of output quoted when a process dies: enough for a faulthandler report
  @crash_tail 4_000

  @type worker :: pid() | atom()

  # binary_to_term(bin, [:safe]) only decodes atoms that already exist. These
  # are every atom PROTOCOL.md names; listing them here creates them when this
  # module loads.
  @protocol_atoms ~w(ready ok error chunk health describe event log bye call cancel credit
    shutdown protocol pid worker_id python version methods threads max_inflight kind type
    message traceback details known signature reason status healthy busy draining uptime_ms
    memory_mb inflight served failed loaded_models extra name doc params required default
    annotation streaming async timeout_ms debug info warning critical logger call_id
    exception unknown_method bad_arguments timeout cancelled unencodable bad_request
    overloaded shutting_down kind positional_only meta credit size max_frame)a

  @doc false
  def __protocol_atoms__, do: @protocol_atoms

  @doc false
  def child_spec(opts) do
    grace = Keyword.get(opts, :shutdown_grace, @default_grace)

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
    opts = validate!(opts)
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
  def await_ready(worker, timeout \\ @default_start_timeout),
    do: safe_call(worker, :await_ready, timeout)

  @doc """
  What the worker knows about itself: `worker_id`, `os_pid` (the Python
  worker's), `guard_pid` (its guard's, or nil), `status`, `restarts`,
  `backoff_ms` (the delay before the latest restart), `inflight`, `ready` info.
  """
  @spec info(worker()) :: map()
  def info(worker), do: GenServer.call(worker, :info)

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

  @known [
    :target,
    :python,
    :worker_id,
    :worker_opts,
    :worker_args,
    :cd,
    :env,
    :start_timeout,
    :shutdown_grace,
    :cancel_grace,
    :health_interval,
    :hung_after,
    :stable_after,
    :output,
    :restart_window,
    :name,
    :pool,
    :id
  ]

  @doc false
  def validate!(opts) do
    unless Keyword.keyword?(opts),
      do: raise(ArgumentError, "expected a keyword list of options, got: #{inspect(opts)}")

    case Keyword.keys(opts) -- @known do
      [] -> :ok
      bad -> raise ArgumentError, "unknown worker options #{inspect(bad)}, got: #{inspect(opts)}"
    end

    target = opts[:target]

    unless is_binary(target) and target != "",
      do: raise(ArgumentError, ":target must be a path or module string, got: #{inspect(target)}")

    worker_opts = Keyword.get(opts, :worker_opts, [])

    unless Keyword.keyword?(worker_opts),
      do:
        raise(ArgumentError, ":worker_opts must be a keyword list, got: #{inspect(worker_opts)}")

    worker_args = Keyword.get(opts, :worker_args, [])

    unless is_list(worker_args) and Enum.all?(worker_args, &is_binary/1),
      do:
        raise(
          ArgumentError,
          ":worker_args must be a list of strings, got: #{inspect(worker_args)}"
        )

    output = Keyword.get(opts, :output, :capture)

    unless output in [:capture, :inherit],
      do: raise(ArgumentError, ":output must be :capture or :inherit, got: #{inspect(output)}")

    for key <- [:start_timeout, :shutdown_grace, :restart_window, :stable_after],
        Keyword.has_key?(opts, key) do
      check!(key, opts[key], is_integer(opts[key]) and opts[key] >= 0, "a non-negative integer")
    end

    check!(:hung_after, opts[:hung_after], valid?(opts, :hung_after, 1), "a positive integer")

    check!(
      :health_interval,
      opts[:health_interval],
      valid?(opts, :health_interval, 1, nil),
      "a positive integer or nil"
    )

    check!(
      :cancel_grace,
      opts[:cancel_grace],
      valid?(opts, :cancel_grace, 0, :infinity),
      "a non-negative integer or :infinity"
    )

    opts
    |> Keyword.put(:python, OSProcess.python(opts[:python]))
    |> Keyword.put_new(:start_timeout, @default_start_timeout)
    |> Keyword.put_new(:shutdown_grace, @default_grace)
    |> Keyword.put_new(:cancel_grace, @default_cancel_grace)
    |> Keyword.put_new(:health_interval, @default_health_interval)
    |> Keyword.put_new(:hung_after, @default_hung_after)
    |> Keyword.put_new(:stable_after, @default_stable_after)
    |> Keyword.put_new(:restart_window, 10_000)
    |> Keyword.put(:output, output)
    |> Keyword.put(:worker_opts, worker_opts)
    |> Keyword.put(:worker_args, worker_args)
  end

  # Absent, or an integer >= min, or the one other value allowed.
  defp valid?(opts, key, min, other \\ :none) do
    case Keyword.fetch(opts, key) do
      :error -> true
      {:ok, ^other} -> true
      {:ok, value} -> is_integer(value) and value >= min
    end
  end

  defp check!(_key, _value, true, _what), do: :ok

  defp check!(key, value, false, what),
    do: raise(ArgumentError, "#{inspect(key)} must be #{what}, got: #{inspect(value)}")

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
      ready: nil,
      ready_at: nil,
      status: :down,
      next_id: 0,
      calls: %{},
      refs: %{},
      callers: %{},
      callers_limit: @max_callers,
      asks: %{},
      backlog: [],
      ready_waiters: [],
      crash_streak: 0,
      last_crash_at: nil,
      backoff_ms: 0,
      restarts: 0,
      health_poll: false,
      health_misses: 0,
      last_error: nil
    }

    {:ok, open(state)}
  end

  defp open(state) do
    %{opts: opts} = state
    args = ["-m", "snakepit_py", "worker", opts[:target] | cli_flags(state)]

    port =
      OSProcess.open_port(opts[:python], args,
        log: state.log && fresh_log(state.log),
        cd: opts[:cd],
        env: opts[:env]
      )

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    Process.send_after(self(), {:start_timeout, port}, opts[:start_timeout])

    %{
      state
      | port: port,
        os_pid: os_pid,
        port_os_pid: os_pid,
        status: :starting,
        ready: nil,
        ready_at: nil
    }
  end

  # A new file rather than a truncated one: a killed process that is still
  # going away may write a last line to the old one.
  defp fresh_log(log) do
    File.rm(log)
    log
  end

  defp cli_flags(%{opts: opts, worker_id: id}) do
    id_flag = if id, do: ["--worker-id", to_string(id)], else: []

    own_args = if opts[:worker_args] == [], do: [], else: ["--" | opts[:worker_args]]

    id_flag ++
      Enum.flat_map(opts[:worker_opts], fn
        {_key, value} when value in [nil, false] -> []
        {key, true} -> [flag(key)]
        {key, value} -> [flag(key), to_string(value)]
      end) ++ own_args
  end

  defp flag(key), do: "--" <> String.replace(to_string(key), "_", "-")

  @impl true
  def handle_call(:await_ready, from, state) do
    case state.status do
      :ready -> {:reply, {:ok, state.ready}, state}
      _ -> {:noreply, %{state | ready_waiters: [from | state.ready_waiters]}}
    end
  end

  def handle_call({:ask, what}, from, %{status: :ready} = state) do
    {:noreply, ask_python(what, from, state)}
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

  defp ask_python(what, from, state) do
    id = state.next_id
    send_frame(state, {what, id})
    %{state | next_id: id + 1, asks: Map.put(state.asks, id, {what, from})}
  end

  @impl true
  def handle_info({port, {:data, bin}}, %{port: port} = state) do
    case decode(bin) do
      {:ok, frame} -> handle_frame(frame, state)
      :error -> {:noreply, protocol_violation(bin, state)}
    end
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    {:noreply, python_exited(status, state)}
  end

  # The port ended without an exit status (e.g. :epipe: a call was written as
  # the process died). It is as dead to us as if it had exited.
  def handle_info({:EXIT, port, reason}, %{port: port} = state) do
    {:noreply, port_closed(reason, state)}
  end

  def handle_info({:"$snakepit_call", call}, state) do
    {:noreply, accept_call(call, state)}
  end

  def handle_info({:"$snakepit_cancel", ref}, state) do
    {:noreply, cancel(ref, state)}
  end

  def handle_info({:DOWN, mon, :process, pid, _reason}, state) do
    case state.callers do
      %{^pid => ^mon} ->
        # A caller died: its calls are cancelled rather than run for nobody.
        state = %{state | callers: Map.delete(state.callers, pid)}

        {:noreply,
         Enum.reduce(state.calls, state, fn
           {id, %{caller: ^pid}}, acc -> cancel_id(id, acc)
           _, acc -> acc
         end)}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:"$snakepit_credit", ref, n}, state) do
    case state.refs do
      %{^ref => id} -> send_frame(state, {:credit, id, n})
      _ -> :ok
    end

    {:noreply, state}
  end

  # One poll in flight at a time; each tick that finds it still unanswered is a miss.
  def handle_info({:"$snakepit_health_tick", port}, %{port: port, status: :ready} = state) do
    state =
      if state.health_poll,
        do: %{state | health_misses: state.health_misses + 1},
        else: %{ask_python(:health, :poll, state) | health_poll: true}

    if state.health_misses >= state.opts[:hung_after] do
      {:noreply, hung(state)}
    else
      schedule_health_tick(state)
      {:noreply, state}
    end
  end

  def handle_info({:start_timeout, port}, %{port: port, status: :starting} = state) do
    timeout = state.opts[:start_timeout]
    error = start_error("did not send :ready within #{timeout} ms", state)
    {:noreply, start_failed(error, kill(state))}
  end

  # The last step of the ladder (soft cancel, interrupt: Python's; kill: ours).
  def handle_info({:cancel_deadline, port, id}, %{port: port} = state) do
    case Map.pop(state.calls, id) do
      {nil, _} -> {:noreply, state}
      {call, calls} -> {:noreply, cancel_by_kill(id, call, %{state | calls: calls})}
    end
  end

  def handle_info(:restart, %{status: :down} = state) do
    {:noreply, open(%{state | restarts: state.restarts + 1})}
  end

  def handle_info(_stale, state), do: {:noreply, state}

  # ---------------------------------------------------------------- frames

  defp decode(bin) do
    {:ok, :erlang.binary_to_term(bin, [:safe])}
  rescue
    ArgumentError -> :error
  end

  defp handle_frame({:ok, id, result}, state), do: {:noreply, finish(id, {:ok, result}, state)}

  defp handle_frame({:error, id, error}, state) when is_integer(id),
    do: {:noreply, finish(id, {:error, Error.from_wire(error)}, state)}

  defp handle_frame({:error, nil, error}, state) do
    Logger.warning("worker refused a frame: #{Exception.message(Error.from_wire(error))}",
      snakepit_worker: name(state)
    )

    {:noreply, state}
  end

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
      error = start_error("speaks protocol #{inspect(info[:protocol])}, expected 1", state)
      {:noreply, start_failed(error, kill(state))}
    end
  end

  defp handle_frame({what, id, answer}, state) when what in [:health, :describe] do
    case Map.pop(state.asks, id) do
      {{^what, :poll}, asks} ->
        notify_models(answer, state)
        {:noreply, %{state | asks: asks, health_poll: false, health_misses: 0}}

      {{^what, from}, asks} ->
        if what == :health, do: notify_models(answer, state)
        GenServer.reply(from, {:ok, answer})
        {:noreply, %{state | asks: asks}}

      {nil, _} ->
        {:noreply, state}
    end
  end

  defp handle_frame({:event, "loaded_models", models}, state) do
    notify_models(%{loaded_models: models}, state)
    {:noreply, state}
  end

  defp handle_frame({:event, name, data}, state) do
    Logger.debug("event #{inspect(name)}: #{inspect(data)}", snakepit_worker: name(state))
    {:noreply, state}
  end

  defp handle_frame({:log, level, message, meta}, state) do
    meta = if is_map(meta), do: meta, else: %{}

    Logger.log(logger_level(level), to_string(message),
      snakepit_worker: name(state),
      python_logger: meta[:logger],
      call_id: meta[:call_id]
    )

    {:noreply, state}
  end

  defp handle_frame({:bye, stats}, state) do
    Logger.debug("worker said bye: #{inspect(stats)}", snakepit_worker: name(state))
    {:noreply, state}
  end

  defp handle_frame(other, state) do
    Logger.warning("ignoring unexpected frame #{inspect(other, limit: 20)}",
      snakepit_worker: name(state)
    )

    {:noreply, state}
  end

  defp logger_level(level) when level in [:debug, :info, :warning, :error, :critical], do: level
  defp logger_level(_), do: :info

  defp notify_models(%{loaded_models: models}, %{pool: pool})
       when is_list(models) and pool != nil,
       do: send(pool, {:"$snakepit_models", self(), models})

  defp notify_models(_report, _state), do: :ok

  # ----------------------------------------------------------------- calls

  defp accept_call(call, %{status: :ready} = state), do: dispatch(call, state)

  defp accept_call(call, %{status: status, pool: pool} = state)
       when status in [:starting, :down] and pool != nil and call.pool == pool do
    # The pool picked us just before hearing that we crashed: hand it back.
    send(pool, {:"$snakepit_requeue", self(), call})
    state
  end

  defp accept_call(call, %{status: status} = state) when status in [:starting, :down] do
    %{state | backlog: [call | state.backlog]}
  end

  defp dispatch(call, state) do
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

        send_frame(
          state,
          {:call, id, call.method, call.args, call.kwargs, wire_opts(call, timeout_ms)}
        )

        state = watch(call.caller, state)
        state = %{state | next_id: id + 1, calls: Map.put(state.calls, id, call)}

        # Only streams are looked up by ref often (a credit per chunk taken); a
        # cancel, rare, finds a plain call by scanning (see cancel/2).
        if call.stream, do: %{state | refs: Map.put(state.refs, call.ref, id)}, else: state
    end
  end

  defp wire_opts(%{meta: meta, credit: nil}, nil), do: %{meta: meta}

  defp wire_opts(%{meta: meta, credit: nil}, timeout_ms),
    do: %{meta: meta, timeout_ms: timeout_ms}

  defp wire_opts(%{credit: credit} = call, timeout_ms),
    do: Map.put(wire_opts(%{call | credit: nil}, timeout_ms), :credit, credit)

  # If a caller dies, its calls are cancelled (see the :DOWN clause). A caller
  # stays monitored after its call ends: a process that calls again and again
  # costs one monitor, not a monitor and a demonitor per call. When the watch
  # list reaches its limit, callers with nothing in flight are let go; the
  # limit then doubles past what is left, so a flood of live callers costs an
  # amortised constant per call, never a scan per call.
  defp watch(pid, %{callers: callers} = state) do
    case callers do
      %{^pid => _mon} ->
        state

      _ when map_size(callers) >= state.callers_limit ->
        kept = forget_idle_callers(state)
        limit = max(@max_callers, 2 * map_size(kept))
        %{state | callers: Map.put(kept, pid, Process.monitor(pid)), callers_limit: limit}

      _ ->
        %{state | callers: Map.put(callers, pid, Process.monitor(pid))}
    end
  end

  defp forget_idle_callers(%{callers: callers, calls: calls}) do
    busy = for {_id, %{caller: pid}} <- calls, into: MapSet.new(), do: pid

    for {pid, mon} <- callers, reduce: callers do
      acc ->
        if MapSet.member?(busy, pid) do
          acc
        else
          Process.demonitor(mon, [:flush])
          Map.delete(acc, pid)
        end
    end
  end

  defp time_left(%{deadline: nil}), do: nil

  defp time_left(%{deadline: deadline}) do
    left = deadline - Call.now_ms()
    if left > 0, do: left, else: :expired
  end

  defp finish(id, reply, state) do
    case Map.pop(state.calls, id) do
      {nil, _} ->
        state

      {call, calls} ->
        finish_call(call, reply, state)
        state = %{state | calls: calls}
        if call.stream, do: %{state | refs: Map.delete(state.refs, call.ref)}, else: state
    end
  end

  defp finish_call(call, reply, state) do
    Call.reply(call, reply)
    if call.pool, do: send(call.pool, {:"$snakepit_checkin", self(), call.ref})
    state
  end

  defp cancel(ref, state) do
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

  defp cancel_id(id, state) do
    send_frame(state, {:cancel, id})
    grace = state.opts[:cancel_grace]

    if grace != :infinity,
      do: Process.send_after(self(), {:cancel_deadline, state.port, id}, grace)

    state
  end

  defp send_frame(%{port: port}, frame) when is_port(port) do
    Port.command(port, :erlang.term_to_binary(frame))
    :ok
  rescue
    # The port died under us. It is linked and exits are trapped, so its
    # {:EXIT, port, reason} is on its way (an :exit_status may not be).
    ArgumentError -> :ok
  end

  defp send_frame(_state, _frame), do: :ok

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
    schedule_health_tick(state)
    for from <- state.ready_waiters, do: GenServer.reply(from, {:ok, info})
    if state.pool, do: send(state.pool, {:"$snakepit_ready", self(), public_info(state)})
    backlog = Enum.reverse(state.backlog)
    Enum.reduce(backlog, %{state | ready_waiters: [], backlog: []}, &dispatch/2)
  end

  defp schedule_health_tick(%{opts: opts, port: port}) do
    if interval = opts[:health_interval],
      do: Process.send_after(self(), {:"$snakepit_health_tick", port}, interval)
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

  defp python_exited(status, %{status: :starting} = state) do
    error =
      start_error(
        "exited with status #{status}#{signal_note(status)} before sending :ready",
        state
      )

    start_failed(error, %{state | port: nil})
  end

  defp python_exited(status, state) do
    died("exited with status #{status}#{signal_note(status)}", %{exit_status: status}, state)
  end

  defp port_closed(reason, state) do
    state = kill(state)
    why = "its port closed (#{inspect(reason)}) with no exit status"

    case state.status do
      :starting -> start_failed(start_error(why <> " before sending :ready", state), state)
      _ -> died(why <> "; it was killed to be sure", %{port_closed: reason}, state)
    end
  end

  defp died(why, details, state) do
    tail = OSProcess.tail(state.log, @crash_tail)

    error =
      Error.new(
        :worker_crashed,
        "Python worker #{name(state)} (OS pid #{state.os_pid}) #{why}" <> quote_lines(tail),
        details: Map.put(details, :output_tail, tail)
      )

    log_failure(error, state)
    crashed(error, %{state | port: nil})
  end

  defp hung(state) do
    %{health_interval: interval, hung_after: misses} = Map.new(state.opts)
    tail = OSProcess.tail(state.log, @crash_tail)

    error =
      Error.new(
        :worker_hung,
        "Python worker #{name(state)} (OS pid #{state.os_pid}) answered none of its last " <>
          "#{misses} health polls (#{misses * interval} ms); it was killed" <> quote_lines(tail),
        details: %{missed_polls: misses, output_tail: tail}
      )

    log_failure(error, state)
    crashed(error, kill(state))
  end

  # The cancelled call gets its one terminal now; the others in flight on the
  # same process cannot survive the kill.
  defp cancel_by_kill(id, call, state) do
    grace = state.opts[:cancel_grace]
    what = "call #{id} (#{call.method}) did not end within #{grace} ms of its cancel"

    Call.reply(
      call,
      {:error,
       Error.new(:cancelled, what <> "; its Python process was killed",
         details: %{reason: "killed", cancel_grace: grace}
       )}
    )

    state = if call.stream, do: %{state | refs: Map.delete(state.refs, call.ref)}, else: state

    error =
      Error.new(
        :worker_crashed,
        "Python worker #{name(state)} (OS pid #{state.os_pid}) was killed: #{what}",
        details: %{killed_for: id}
      )

    Logger.warning("#{what}; killing the Python process (OS pid #{state.os_pid})",
      snakepit_worker: name(state)
    )

    crashed(error, kill(state))
  end

  defp log_failure(error, state) do
    Logger.error("#{error.message}\n(#{map_size(state.calls)} call(s) in flight failed)",
      snakepit_worker: name(state)
    )
  end

  # The last lines the process wrote: a crash's own report (faulthandler's
  # traceback of every thread) and what came just before it.
  defp quote_lines(""), do: ""

  defp quote_lines(tail) do
    lines = String.split(String.trim_trailing(tail), "\n")
    # a full tail starts mid-file: its first line may be cut
    lines = if length(lines) > 1 and byte_size(tail) >= @crash_tail, do: tl(lines), else: lines
    "; its output ends with:\n" <> Enum.join(lines, "\n")
  end

  defp protocol_violation(bin, state) do
    error =
      Error.new(
        :protocol_error,
        "worker #{name(state)} sent a frame the BEAM refused to decode " <>
          "(#{byte_size(bin)} bytes: #{inspect(binary_part(bin, 0, min(byte_size(bin), 40)))}); restarting it"
      )

    Logger.error(error.message, snakepit_worker: name(state))
    crashed(error, kill(state))
  end

  # The process died or was killed after :ready: fail everything, restart.
  defp crashed(error, state) do
    # The pool hears :down rather than a checkin per failed call.
    for {_id, call} <- state.calls, do: Call.reply(call, {:error, error})

    for {_id, {_what, from}} <- state.asks,
        from != :poll,
        do: GenServer.reply(from, {:error, error})

    if state.pool, do: send(state.pool, {:"$snakepit_down", self(), error})

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
    Logger.error(error.message, snakepit_worker: name(state))
    for from <- state.ready_waiters, do: GenServer.reply(from, {:error, error})
    for call <- state.backlog, do: Call.reply(call, {:error, error})
    if state.pool, do: send(state.pool, {:"$snakepit_start_failed", self(), error})
    schedule_restart(%{state | ready_waiters: [], backlog: [], last_error: error})
  end

  # A crash loop is a run of crashes of processes that were never stable (never
  # ready, or ready for less than :stable_after ms), each within
  # :restart_window of the one before. Its first crash restarts at once, the
  # next ones back off; any other crash restarts at once.
  defp schedule_restart(state) do
    now = Call.now_ms()
    stable? = state.ready_at != nil and now - state.ready_at >= state.opts[:stable_after]

    looping? =
      not stable? and state.last_crash_at != nil and
        now - state.last_crash_at < state.opts[:restart_window]

    streak = if looping?, do: state.crash_streak + 1, else: 1
    delay = backoff(streak)

    if delay > 0 do
      Logger.warning("crash loop (#{streak} early crashes in a row): restarting in #{delay} ms",
        snakepit_worker: name(state)
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

  # 0, then 200, 400, 800 ... ms.
  defp backoff(1), do: 0
  defp backoff(n), do: min(100 * Integer.pow(2, n - 1), @backoff_max)

  # Closes the port and SIGKILLs the process tree (see OSProcess.kill_tree/2).
  defp kill(%{port: port} = state) do
    if is_port(port), do: safe_close(port)
    OSProcess.kill_tree(state.os_pid, state.port_os_pid)
    %{state | port: nil}
  end

  defp safe_close(port) do
    Port.close(port)
  rescue
    ArgumentError -> :ok
  end

  defp start_error(why, state) do
    tail = tail(state)

    output =
      cond do
        state.log == nil -> " (its output went to the BEAM's stderr)"
        tail == "" -> " (it printed nothing)"
        true -> "; its output ends with:\n" <> tail
      end

    Error.new(
      :start_failed,
      "Python worker #{name(state)} (#{state.opts[:python]} -m snakepit_py worker " <>
        "#{state.opts[:target]}) #{why}#{output}",
      details: %{output_tail: tail, os_pid: state.os_pid}
    )
  end

  defp tail(state), do: OSProcess.tail(state.log)

  defp signal_note(status) when status > 128, do: " (killed by signal #{status - 128})"
  defp signal_note(_), do: ""

  defp name(state), do: state.worker_id || "pid:#{state.os_pid}"

  # ------------------------------------------------------------------ stop

  @impl true
  def terminate(_reason, state) do
    state = stop_python(state)
    error = Error.new(:shutting_down, "worker #{name(state)} stopped")
    for {_id, call} <- state.calls, do: Call.reply(call, {:error, error})
    for call <- state.backlog, do: Call.reply(call, {:error, error})

    for {_id, {_what, from}} <- state.asks,
        from != :poll,
        do: GenServer.reply(from, {:error, error})

    if state.log, do: File.rm(state.log)
    :ok
  end

  # muontrap's escalation, by hand: ask, wait, close, TERM, KILL. Under a guard
  # the worker gets the signals and the guard a last look.
  defp stop_python(%{port: nil} = state), do: state

  defp stop_python(%{port: port, os_pid: os_pid} = state) do
    grace = state.opts[:shutdown_grace]

    state =
      if state.status == :ready do
        send_frame(state, {:shutdown, grace})
        drain(state, Call.now_ms() + grace + 500)
      else
        state
      end

    if state.port do
      safe_close(port)

      if OSProcess.alive?(os_pid) do
        OSProcess.signal(os_pid, "TERM")

        OSProcess.await_exit(os_pid, 1_000) || OSProcess.kill_tree(os_pid, state.port_os_pid)
      end
    end

    guard = guard_pid(state)

    if guard && not OSProcess.await_exit(guard, 1_000),
      do: OSProcess.signal_all(OSProcess.descendants(guard) ++ [guard], "KILL")

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
          case decode(bin) do
            {:ok, frame} -> frame |> handle_frame(state) |> elem(1)
            :error -> state
          end

        drain(state, deadline)
    after
      max(deadline - Call.now_ms(), 0) -> state
    end
  end
end
