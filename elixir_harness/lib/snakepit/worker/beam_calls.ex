defmodule Snakepit.Worker.BeamCalls do
  @moduledoc false
  # Calls from Python into the BEAM (protocol 1.1, docs/protocol.md §9): the
  # worker's `:beam_functions` served to its Python process.
  #
  # Each `{:beam_call, ref, name, args, opts}` runs in a process of its own
  # under the worker's Task.Supervisor (started with the first worker that has
  # functions), never in the Worker GenServer: the function may take as long
  # as it likes, call the pool, or call this very worker. The task encodes its
  # reply itself (`term_to_binary`) and hands the binary to the worker, which
  # is the one arbiter of "exactly one reply per ref": a reply, a timeout, an
  # exit and a `{:beam_cancel, ref}` race, and whichever the worker sees first
  # wins; the others find the ref gone.
  #
  # These functions take and return the worker's state map and own its
  # `:beam_fns` (name => fun), `:beam_sup`, `:beam` (ref => entry), `:beam_tasks`
  # (task pid => ref) and `:beam_open` (false once the worker is stopping).

  require Logger

  alias Snakepit.Worker.Wire

  @type entry :: %{
          pid: pid(),
          mon: reference(),
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
    worker = self()
    port = state.port
    call_id = Map.get(opts, :call_id)

    meta = %{
      worker: worker,
      worker_id: name(state),
      call_id: call_id,
      function: name,
      ref: ref
    }

    {:ok, pid} =
      Task.Supervisor.start_child(state.beam_sup, __MODULE__, :execute, [
        worker,
        port,
        fun,
        args,
        meta
      ])

    mon = Process.monitor(pid)

    timer =
      case Map.get(opts, :timeout_ms) do
        ms when is_number(ms) and ms > 0 ->
          Process.send_after(worker, {:"$snakepit_beam_timeout", port, ref}, ceil(ms))

        _ ->
          nil
      end

    entry = %{pid: pid, mon: mon, timer: timer, name: name, call_id: call_id}

    %{
      state
      | beam: Map.put(state.beam, ref, entry),
        beam_tasks: Map.put(state.beam_tasks, pid, ref)
    }
  end

  # In the task: run the function, encode the reply, hand it to the worker.
  @doc false
  def execute(worker, port, fun, args, meta) do
    Process.put(:"$snakepit_beam_call", meta)
    # (a new process has no Logger metadata: set, not merged; a nil call_id is left out)
    logger_meta = %{snakepit_worker: meta.worker_id, beam_function: meta.function}

    :logger.set_process_metadata(
      if meta.call_id == nil, do: logger_meta, else: Map.put(logger_meta, :call_id, meta.call_id)
    )

    outcome =
      try do
        {:ok, apply(fun, args)}
      rescue
        e -> {:error, exception(e, __STACKTRACE__)}
      catch
        :exit, reason -> {:error, error(:exception, "exit", "exited: #{inspect(reason)}")}
        :throw, value -> {:error, error(:exception, "throw", "threw: #{inspect(value)}")}
      end

    send(worker, {:"$snakepit_beam_done", port, meta.ref, encode(meta.ref, outcome)})
  end

  defp encode(ref, outcome), do: :erlang.term_to_binary({:beam_reply, ref, outcome})

  @doc "The task for `ref` replied (`bin` is the encoded frame)."
  @spec done(port(), term(), binary(), map()) :: map()
  def done(port, ref, bin, %{port: port} = state) do
    case take(ref, state) do
      {nil, state} ->
        state

      {entry, state} ->
        Process.demonitor(entry.mon, [:flush])
        command(port, bin)
        state
    end
  end

  def done(_stale_port, _ref, _bin, state), do: state

  @doc "The timeout of `ref` ran out: its task is killed and `:timeout` sent."
  @spec timeout(port(), term(), map()) :: map()
  def timeout(port, ref, %{port: port} = state) do
    case take(ref, state) do
      {nil, state} ->
        state

      {entry, state} ->
        stop_task(entry)

        reply_error(
          state,
          ref,
          :timeout,
          "BEAM function #{inspect(entry.name)} ran past its timeout"
        )
    end
  end

  def timeout(_stale_port, _ref, state), do: state

  @doc "`{:beam_cancel, ref}`: Python stopped waiting; the task is killed and nothing is sent."
  @spec cancel(term(), map()) :: map()
  def cancel(ref, state) do
    case take(ref, state) do
      {nil, state} ->
        state

      {entry, state} ->
        stop_task(entry)
        state
    end
  end

  @doc """
  A `:DOWN`: `{:ok, state}` when it was a beam task's (it ended without a
  reply: killed from outside is `:cancelled`, any other exit `:exception`),
  `:error` when the monitor is not one of ours.
  """
  @spec down(pid(), reference(), term(), map()) :: {:ok, map()} | :error
  def down(pid, mon, reason, %{beam_tasks: tasks} = state) do
    case tasks do
      %{^pid => ref} ->
        case Map.get(state.beam, ref) do
          %{mon: ^mon} ->
            {_entry, state} = take(ref, state)
            {:ok, reply_exit(state, ref, reason)}

          _ ->
            {:ok, %{state | beam_tasks: Map.delete(tasks, pid)}}
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
  this worker's beam tasks (a BEAM function calling back into its own worker):
  the call then carries `beam_call: ref`, so that Python can refuse one that
  would deadlock.
  """
  @spec reentry(map(), pid()) :: term() | nil
  def reentry(%{beam_tasks: tasks}, caller), do: Map.get(tasks, caller)

  @doc "The Python process ended: every beam call's task is killed (there is no one to reply to)."
  @spec kill_all(map()) :: map()
  def kill_all(%{beam: beam} = state) when map_size(beam) == 0, do: state

  def kill_all(state) do
    for {_ref, entry} <- state.beam, do: stop_task(entry)
    %{state | beam: %{}, beam_tasks: %{}}
  end

  @doc "The worker is stopping: beam calls in flight get `:cancelled`, new ones too."
  @spec stop(map()) :: map()
  def stop(state) do
    for {ref, _entry} <- state.beam,
        do: reply_error(state, ref, :cancelled, "the worker is stopping")

    %{kill_all(state) | beam_open: false}
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

  defp stop_task(entry) do
    Process.demonitor(entry.mon, [:flush])
    if entry.timer, do: Process.cancel_timer(entry.timer)
    Process.exit(entry.pid, :kill)
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
