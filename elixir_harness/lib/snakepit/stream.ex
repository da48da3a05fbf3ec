defmodule Snakepit.Stream do
  @moduledoc """
  Streaming calls: a generator method's chunks, one by one, with flow control.

      iex> {:ok, _} = Snakepit.Pool.start_link(name: :trainer, target: "../examples/ml_worker.py", size: 1)
      iex> me = self()
      iex> {:ok, _ref} =
      ...>   Snakepit.Stream.open(:trainer, %{method: "train", args: [[1, 2]], kwargs: %{"epochs" => 3}}, fn
      ...>     {:data, chunk} -> send(me, {:progress, chunk["epoch"]})
      ...>     {:end, result} -> send(me, {:done, result["model"]})
      ...>     {:error, error} -> send(me, {:failed, Exception.message(error)})
      ...>   end)
      iex> for _ <- 1..4, do: receive(do: (event -> event))
      [progress: 1, progress: 2, progress: 3, done: "trained"]

  A stream is cancelled with its ref; its callback then gets the terminal event:

      iex> {:ok, _} = Snakepit.Pool.start_link(name: :cancelled, target: "../examples/ml_worker.py", size: 1)
      iex> me = self()
      iex> {:ok, ref} = Snakepit.Stream.open(:cancelled, %{method: "train", args: [[1, 2]]}, &send(me, &1))
      iex> Snakepit.Stream.cancel(ref)
      :ok
      iex> receive do: ({:error, error} -> error.kind), after: (5_000 -> :no_terminal)
      :cancelled

  The callback runs in a process of its own, started by `open/4`, once per
  event: any number of `{:data, chunk}`, then exactly one `{:end, result}` or
  `{:error, %Snakepit.Error{}}` (after `cancel/1` that is usually
  `kind: :cancelled`). The stream process is independent of the caller: it
  ends with the stream, not with the process that opened it.

  Flow control: the Python worker may run at most `:window` chunks ahead of
  the callback. Each time the callback returns, one more chunk is granted, so a
  slow consumer blocks the Python generator instead of filling a mailbox.
  """

  require Logger
  alias Snakepit.{Call, Error}

  @type event :: {:data, term()} | {:end, term()} | {:error, Error.t()}

  @doc """
  Opens a stream on a pool (or a `Snakepit.Worker` pid).

  Options: `:window` (chunks in flight, default 8), `:timeout` (ms for the
  whole stream, default `:infinity`), `:affinity`, `:meta`, `:traceparent`
  (see `Snakepit.call/3`).
  """
  @spec open(atom() | pid(), map(), (event() -> any()), keyword()) ::
          {:ok, reference()} | {:error, Error.t()}
  def open(pool, request, fun, opts \\ []) when is_function(fun, 1) do
    window = Keyword.get(opts, :window, 8)

    unless is_integer(window) and window > 0,
      do: raise(ArgumentError, ":window must be a positive integer, got: #{inspect(window)}")

    call = Call.build!(request, opts, allowed: [:window], default_timeout: :infinity)
    call = %{call | stream: true, credit: window}
    opener = self()
    tag = make_ref()
    {pid, mon} = spawn_monitor(fn -> run(pool, call, fun, opener, tag) end)

    receive do
      {^tag, reply} ->
        Process.demonitor(mon, [:flush])
        reply

      {:DOWN, ^mon, :process, ^pid, reason} ->
        {:error, Call.down_error(pid, reason)}
    end
  end

  @doc "Cancels a stream; its callback then receives its terminal event. Always `:ok`."
  @spec cancel(reference()) :: :ok
  def cancel(ref) when is_reference(ref) do
    send(ref, {:"$snakepit_stream_cancel", ref})
    :ok
  end

  defp run(pool, call, fun, opener, tag) do
    case Call.start(pool, %{call | caller: self()}) do
      {:ok, target, ref} ->
        send(opener, {tag, {:ok, ref}})
        loop(target, ref, fun, call.deadline)

      {:error, _} = error ->
        send(opener, {tag, error})
    end
  end

  defp loop(target, ref, fun, deadline) do
    receive do
      {^ref, {:chunk, worker, _seq, data}} ->
        if deliver(fun, {:data, data}, target, ref) do
          send(worker, {:"$snakepit_credit", ref, 1})
          loop(target, ref, fun, deadline)
        end

      {^ref, {:ok, result}} ->
        Process.demonitor(ref, [:flush])
        deliver(fun, {:end, result}, target, ref)

      {^ref, {:error, error}} ->
        Process.demonitor(ref, [:flush])
        deliver(fun, {:error, error}, target, ref)

      {:"$snakepit_stream_cancel", ^ref} ->
        send(target, {:"$snakepit_cancel", ref})
        loop(target, ref, fun, deadline)

      {:DOWN, ^ref, :process, pid, reason} ->
        deliver(fun, {:error, Call.down_error(pid, reason)}, target, ref)
    after
      time_left(deadline) ->
        send(target, {:"$snakepit_cancel", ref})
        Process.demonitor(ref, [:flush])
        error = Error.new(:timeout, "the stream did not end in time; it was cancelled")
        deliver(fun, {:error, error}, target, ref)
    end
  end

  defp time_left(nil), do: :infinity
  defp time_left(deadline), do: max(deadline - Call.now_ms(), 0)

  # Runs the callback; if it raises, the stream is cancelled and this process ends.
  defp deliver(fun, event, target, ref) do
    fun.(event)
    true
  rescue
    exception ->
      send(target, {:"$snakepit_cancel", ref})
      Process.demonitor(ref, [:flush])

      Logger.error(
        "stream callback raised; stream cancelled:\n" <>
          Exception.format(:error, exception, __STACKTRACE__)
      )

      false
  end
end
