defmodule Snakepit.Worker.BeamCalls do
  @moduledoc false
  # Calls from Python into the BEAM (protocol 1.1, docs/protocol.md §9): the
  # worker's `:beam_functions` served to its Python process.
  #
  # Each `{:beam_call, ref, name, args, opts}` runs in a process of its own
  # (a *runner*: one beam call at a time) under the worker's Task.Supervisor
  # (started with the first worker that has functions), never in the Worker
  # GenServer: the function may take as long as it likes, call the pool, or
  # call this very worker. The runner encodes its reply itself
  # (`term_to_binary`) and hands the binary to the worker, which is the one
  # arbiter of "exactly one reply per ref": a reply, a timeout, an exit and a
  # `{:beam_cancel, ref}` race, and whichever the worker sees first wins; the
  # others find the ref gone.
  #
  # A runner that finished its call clean (the function returned, and left the
  # process as it found it: no links, monitors, messages, dictionary entries,
  # trapped exits, registered name or group leader of its own, no ETS table
  # made, a small heap; `reusable?/2`) waits for the next call instead of
  # exiting: starting a task under the supervisor costs more than the rest of
  # a short beam call on the BEAM side (docs/benchmarks.md). Anything else,
  # and it exits; the next call gets a new one. At most @idle_max wait; an
  # idle runner hibernates after @hibernate_after ms.
  #
  # These functions take and return the worker's state map and own its
  # `:beam_fns` (name => fun), `:beam_sup`, `:beam` (ref => entry), `:beam_tasks`
  # (runner pid => the ref it serves), `:beam_runners` (every runner's pid =>
  # the worker's monitor of it), `:beam_idle` (runners waiting for a call) and
  # `:beam_open` (false once the worker is stopping).

  require Logger

  alias Snakepit.Worker.Wire

  @idle_max 16
  @hibernate_after 5_000
  # (words: a runner whose heap grew past this is not kept)
  @heap_max 65_536

  @type entry :: %{
          pid: pid(),
          timer: reference() | nil,
          name: String.t(),
          call_id: non_neg_integer() | nil
        }

  @doc "The fields a new worker state starts with."
  @spec new(keyword()) :: map()
  def new(opts) do
    %{
      beam_fns: Keyword.get(opts, :beam_functions) || %{},
      beam_sup: nil,
      beam: %{},
      beam_tasks: %{},
      beam_runners: %{},
      beam_idle: [],
      beam_open: true
    }
  end

  @doc """
  At `:ready`: announces the functions to a worker that lists `:beam_call` in
  its `features`; a worker that does not (protocol 1.0) is told nothing.
  """
  @spec announce(map(), map()) :: map()
  def announce(_info, %{beam_fns: fns} = state) when map_size(fns) == 0, do: state

  def announce(info, state) do
    features = if is_list(info[:features]), do: info[:features], else: []

    if :beam_call in features do
      Wire.send(state.port, {:beam_functions, Map.keys(state.beam_fns)})
      ensure_sup(state)
    else
      Logger.warning(
        "this Python worker does not support calls into the BEAM (protocol 1.0: no " <>
          ":beam_call in its features); its :beam_functions are not served",
        snakepit_worker: name(state)
      )

      state
    end
  end

  defp ensure_sup(%{beam_sup: nil} = state) do
    {:ok, sup} = Task.Supervisor.start_link()
    %{state | beam_sup: sup}
  end

  defp ensure_sup(state), do: state

  @doc "A `{:beam_call, ref, name, args, opts}` frame: runs the function, or answers at once."
  @spec start(term(), term(), term(), term(), map()) :: map()
  def start(ref, name, args, opts, state) do
    fun = if is_binary(name), do: Map.get(state.beam_fns, name)
    opts = if is_map(opts), do: opts, else: %{}

    cond do
      not state.beam_open ->
        reply_error(state, ref, :cancelled, "the worker is stopping")

      fun == nil or state.beam_sup == nil ->
        known = state.beam_fns |> Map.keys() |> Enum.join(", ")

        reply_error(
          state,
          ref,
          :unknown_function,
          "no BEAM function #{inspect(name)} (served: #{if known == "", do: "none", else: known})"
        )

      not is_list(args) ->
        reply_error(state, ref, :bad_arguments, "args must be a list, got: #{inspect(args)}")

      not is_function(fun, length(args)) ->
        {:arity, arity} = Function.info(fun, :arity)

        reply_error(
          state,
          ref,
          :bad_arguments,
          "#{name} takes #{arity} argument(s), got #{length(args)}: #{inspect(args, limit: 10)}"
        )

      true ->
        run(ref, name, fun, args, opts, state)
    end
  end

  defp run(ref, name, fun, args, opts, state) do
    call_id = Map.get(opts, :call_id)
    {pid, state} = runner(state)
    meta = %{worker: self(), worker_id: name(state), call_id: call_id, function: name, ref: ref}
    send(pid, {:"$snakepit_beam_run", state.port, ref, fun, args, meta})

    timer =
      case Map.get(opts, :timeout_ms) do
        ms when is_number(ms) and ms > 0 ->
          Process.send_after(self(), {:"$snakepit_beam_timeout", state.port, ref}, ceil(ms))

        _ ->
          nil
      end

    entry = %{pid: pid, timer: timer, name: name, call_id: call_id}

    %{
      state
      | beam: Map.put(state.beam, ref, entry),
        beam_tasks: Map.put(state.beam_tasks, pid, ref)
    }
  end

  # An idle runner, or a new one (monitored for its whole life).
  defp runner(%{beam_idle: [pid | idle]} = state), do: {pid, %{state | beam_idle: idle}}

  defp runner(state) do
    {:ok, pid} = Task.Supervisor.start_child(state.beam_sup, __MODULE__, :serve, [self()])
    {pid, %{state | beam_runners: Map.put(state.beam_runners, pid, Process.monitor(pid))}}
  end

  # --- in the runner

  @doc false
  # The runner's body: one beam call at a time, for as long as each leaves it
  # clean. (What clean is, is seen at the first call: the worker's monitor is
  # in place by then.)
  def serve(worker), do: wait(worker, nil)

  @doc false
  def wait(worker, clean) do
    receive do
      {:"$snakepit_beam_run", port, ref, fun, args, meta} ->
        clean = clean || fingerprint()
        tables = :erlang.system_info(:ets_count)
        {outcome, ok?} = execute(fun, args, meta)
        reuse? = ok? and reusable?(clean, tables)
        send(worker, {:"$snakepit_beam_done", port, ref, encode(ref, outcome), reuse?})
        if reuse?, do: wait(worker, clean), else: :ok

      :"$snakepit_beam_retire" ->
        :ok
    after
      @hibernate_after -> :erlang.hibernate(__MODULE__, :wait, [worker, clean])
    end
  end

  # Run the function as the only thing this process does.
  defp execute(fun, args, meta) do
    Process.put(:"$snakepit_beam_call", meta)
    # (set, not merged: what a previous call set is gone; a nil call_id is left out)
    logger_meta = %{snakepit_worker: meta.worker_id, beam_function: meta.function}

    :logger.set_process_metadata(
      if meta.call_id == nil, do: logger_meta, else: Map.put(logger_meta, :call_id, meta.call_id)
    )

    outcome =
      try do
        {{:ok, apply(fun, args)}, true}
      rescue
        e -> {{:error, exception(e, __STACKTRACE__)}, false}
      catch
        :exit, reason ->
          {{:error, error(:exception, "exit", "exited: #{inspect(reason)}")}, false}

        :throw, value ->
          {{:error, error(:exception, "throw", "threw: #{inspect(value)}")}, false}
      end

    Process.delete(:"$snakepit_beam_call")
    :logger.unset_process_metadata()
    outcome
  end

  # Whether the next call may run here: the process is as the first call found
  # it, its heap is small, and no ETS table came into being during the call
  # (one it owns would outlive the call; the count is the node's, so a table
  # made elsewhere meanwhile costs a new runner, never a leak).
  defp reusable?(clean, tables) do
    {:total_heap_size, words} = Process.info(self(), :total_heap_size)

    words <= @heap_max and :erlang.system_info(:ets_count) <= tables and
      fingerprint() == clean
  end

  # What a function could leave behind in its process that the next call would inherit.
  defp fingerprint do
    info =
      Process.info(self(), [
        :links,
        :monitors,
        :monitored_by,
        :trap_exit,
        :message_queue_len,
        :registered_name,
        :group_leader,
        :priority,
        :error_handler
      ])

    # (the dictionary in a fixed order: its listing's order may change as keys come and go)
    [:lists.sort(Process.get()) | info]
  end

  defp encode(ref, outcome), do: :erlang.term_to_binary({:beam_reply, ref, outcome})

  @doc """
  The runner serving `ref` replied (`bin` is the encoded frame); `reuse?`: it
  waits for another call.
  """
  @spec done(port(), term(), binary(), boolean(), map()) :: map()
  def done(port, ref, bin, reuse?, %{port: port} = state) do
    case take(ref, state) do
      {nil, state} ->
        # (its timeout or cancel came first: that killed the runner)
        state

      {entry, state} ->
        command(port, bin)
        if reuse?, do: idle(entry.pid, state), else: state
    end
  end

  # (a reply to a Python process that is gone: kill_all killed its runner)
  def done(_stale_port, _ref, _bin, _reuse?, state), do: state

  # A runner that finished clean: kept for the next call, or let go.
  defp idle(pid, %{beam_open: true, beam_idle: idle} = state) when length(idle) < @idle_max,
    do: %{state | beam_idle: [pid | idle]}

  defp idle(pid, state) do
    send(pid, :"$snakepit_beam_retire")
    state
  end

  @doc "The timeout of `ref` ran out: its runner is killed and `:timeout` sent."
  @spec timeout(port(), term(), map()) :: map()
  def timeout(port, ref, %{port: port} = state) do
    case take(ref, state) do
      {nil, state} ->
        state

      {entry, state} ->
        state = stop_runner(entry, state)

        reply_error(
          state,
          ref,
          :timeout,
          "BEAM function #{inspect(entry.name)} ran past its timeout"
        )
    end
  end

  def timeout(_stale_port, _ref, state), do: state

  @doc "`{:beam_cancel, ref}`: Python stopped waiting; the runner is killed and nothing is sent."
  @spec cancel(term(), map()) :: map()
  def cancel(ref, state) do
    case take(ref, state) do
      {nil, state} -> state
      {entry, state} -> stop_runner(entry, state)
    end
  end

  @doc """
  A `:DOWN`: `{:ok, state}` when it was a runner's (one that ended in a call,
  without a reply: killed from outside is `:cancelled`, any other exit
  `:exception`), `:error` when the monitor is not one of ours.
  """
  @spec down(pid(), reference(), term(), map()) :: {:ok, map()} | :error
  def down(pid, mon, reason, %{beam_runners: runners} = state) do
    case runners do
      %{^pid => ^mon} ->
        state = %{
          state
          | beam_runners: Map.delete(runners, pid),
            beam_idle: List.delete(state.beam_idle, pid)
        }

        case state.beam_tasks do
          %{^pid => ref} ->
            {_entry, state} = take(ref, state)
            {:ok, reply_exit(state, ref, reason)}

          _ ->
            {:ok, state}
        end

      _ ->
        :error
    end
  end

  defp reply_exit(state, ref, reason) when reason in [:killed, :shutdown],
    do: reply_error(state, ref, :cancelled, "the BEAM function was stopped (#{reason})")

  defp reply_exit(state, ref, {:shutdown, _} = reason),
    do: reply_error(state, ref, :cancelled, "the BEAM function was stopped (#{inspect(reason)})")

  defp reply_exit(state, ref, reason),
    do: reply_error(state, ref, :exception, "exited: #{inspect(reason)}", "exit")

  @doc """
  The beam call a call from `caller` is made under, when `caller` is one of
  this worker's runners serving a call (a BEAM function calling back into its
  own worker): the call then carries `beam_call: ref`, so that Python can
  refuse one that would deadlock.
  """
  @spec reentry(map(), pid()) :: term() | nil
  def reentry(%{beam_tasks: tasks}, caller), do: Map.get(tasks, caller)

  @doc """
  The Python process ended: the runners of the beam calls in flight are killed
  (there is no one to reply to); idle ones stay for the next process.
  """
  @spec kill_all(map()) :: map()
  def kill_all(%{beam: beam} = state) when map_size(beam) == 0, do: state

  def kill_all(state) do
    state = Enum.reduce(state.beam, state, fn {_ref, entry}, acc -> stop_runner(entry, acc) end)
    %{state | beam: %{}, beam_tasks: %{}}
  end

  @doc "The worker is stopping: beam calls in flight get `:cancelled`, new ones too."
  @spec stop(map()) :: map()
  def stop(state) do
    for {ref, _entry} <- state.beam,
        do: reply_error(state, ref, :cancelled, "the worker is stopping")

    for pid <- state.beam_idle, do: send(pid, :"$snakepit_beam_retire")
    %{kill_all(state) | beam_idle: [], beam_open: false}
  end

  defp take(ref, state) do
    case Map.pop(state.beam, ref) do
      {nil, _} ->
        {nil, state}

      {entry, beam} ->
        if entry.timer, do: Process.cancel_timer(entry.timer)
        {entry, %{state | beam: beam, beam_tasks: Map.delete(state.beam_tasks, entry.pid)}}
    end
  end

  # A runner in the middle of a call is killed: nothing of it comes back (its
  # monitor flushed, its timer cancelled).
  defp stop_runner(entry, state) do
    {mon, runners} = Map.pop(state.beam_runners, entry.pid)
    if mon, do: Process.demonitor(mon, [:flush])
    if entry.timer, do: Process.cancel_timer(entry.timer)
    Process.exit(entry.pid, :kill)
    %{state | beam_runners: runners}
  end

  defp reply_error(state, ref, kind, message, type \\ nil) do
    command(state.port, encode(ref, {:error, error(kind, type || type_of(kind), message)}))
    state
  end

  defp type_of(:unknown_function), do: "UnknownFunction"
  defp type_of(:bad_arguments), do: "BadArguments"
  defp type_of(:timeout), do: "TimeoutError"
  defp type_of(:cancelled), do: "CallCancelled"
  defp type_of(_), do: "Error"

  defp exception(e, stacktrace) do
    %{
      error(:exception, inspect(e.__struct__), Exception.message(e))
      | traceback: Exception.format(:error, e, stacktrace)
    }
  end

  defp error(kind, type, message),
    do: %{kind: kind, type: type, message: message, traceback: nil, details: %{}}

  defp command(port, bin) when is_port(port) do
    Port.command(port, bin)
  rescue
    ArgumentError -> :ok
  end

  defp command(_port, _bin), do: :ok

  defp name(state), do: Snakepit.Worker.Failure.name(state)
end
