defmodule Snakepit.Worker.Failure do
  @moduledoc false
  # The errors a worker reports when its Python process fails to start, ends,
  # hangs, is killed or breaks the protocol: their messages and details. Each
  # function reads the worker's state map (`worker_id`, `os_pid`, `log`,
  # `opts`) and returns a `Snakepit.Error`; sending and logging are the
  # worker's.

  alias Snakepit.{Error, OSProcess}

  # bytes of output quoted when a process dies: enough for a faulthandler report
  @crash_tail 4_000

  @doc "The worker's name in messages and logs."
  @spec name(map()) :: String.t() | term()
  def name(state), do: state.worker_id || "pid:#{state.os_pid}"

  @doc "`:start_failed`: the process did not get to `:ready`, for reason `why`."
  @spec start_failed(String.t(), map()) :: Error.t()
  def start_failed(why, state) do
    tail = OSProcess.tail(state.log)

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

  @doc "How a process with this exit status ended: \"exited with status 137 (killed by signal 9)\"."
  @spec exited(integer()) :: String.t()
  def exited(status), do: "exited with status #{status}#{signal_note(status)}"

  @doc "`:worker_crashed`: the process ended after `:ready`, for reason `why`."
  @spec crashed(String.t(), map(), map()) :: Error.t()
  def crashed(why, details, state) do
    tail = OSProcess.tail(state.log, @crash_tail)

    Error.new(
      :worker_crashed,
      "Python worker #{name(state)} (OS pid #{state.os_pid}) #{why}" <> quote_lines(tail),
      details: Map.put(details, :output_tail, tail)
    )
  end

  @doc "`:worker_hung`: the process left `:hung_after` health polls unanswered."
  @spec hung(map()) :: Error.t()
  def hung(state) do
    %{health_interval: interval, hung_after: misses} = Map.new(state.opts)
    tail = OSProcess.tail(state.log, @crash_tail)

    Error.new(
      :worker_hung,
      "Python worker #{name(state)} (OS pid #{state.os_pid}) answered none of its last " <>
        "#{misses} health polls (#{misses * interval} ms); it was killed" <> quote_lines(tail),
      details: %{missed_polls: misses, output_tail: tail}
    )
  end

  @doc """
  Call `id` ignored its cancel for `:cancel_grace` ms: `{what, cancelled,
  crashed}` with what happened in words, the call's own `:cancelled` error
  and the `:worker_crashed` error for the other calls in flight.
  """
  @spec cancel_ignored(non_neg_integer(), map(), map()) :: {String.t(), Error.t(), Error.t()}
  def cancel_ignored(id, call, state) do
    grace = state.opts[:cancel_grace]
    what = "call #{id} (#{call.method}) did not end within #{grace} ms of its cancel"

    cancelled =
      Error.new(:cancelled, what <> "; its Python process was killed",
        details: %{reason: "killed", cancel_grace: grace}
      )

    crashed =
      Error.new(
        :worker_crashed,
        "Python worker #{name(state)} (OS pid #{state.os_pid}) was killed: #{what}",
        details: %{killed_for: id}
      )

    {what, cancelled, crashed}
  end

  @doc "`:protocol_error`: the process sent `bin`, which does not decode."
  @spec undecodable(binary(), map()) :: Error.t()
  def undecodable(bin, state) do
    Error.new(
      :protocol_error,
      "worker #{name(state)} sent a frame the BEAM refused to decode " <>
        "(#{byte_size(bin)} bytes: #{inspect(binary_part(bin, 0, min(byte_size(bin), 40)))}); restarting it"
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

  defp signal_note(status) when status > 128, do: " (killed by signal #{status - 128})"
  defp signal_note(_), do: ""
end
