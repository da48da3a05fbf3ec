defmodule Snakepit.Worker.Notices do
  @moduledoc false
  # Frames that concern no call and change nothing: Python's `logging`
  # records, events, `:bye`, refusals of frames we sent, and anything
  # unexpected. Each goes to `Logger` with the worker's name as
  # `snakepit_worker` metadata.

  require Logger

  alias Snakepit.Error

  @doc "Logs one such frame."
  @spec log(term(), term()) :: :ok
  def log({:error, nil, error}, name) do
    Logger.warning("worker refused a frame: #{Exception.message(Error.from_wire(error))}",
      snakepit_worker: name
    )
  end

  def log({:event, event, data}, name) do
    Logger.debug("event #{inspect(event)}: #{inspect(data)}", snakepit_worker: name)
  end

  def log({:log, level, message, meta}, name) do
    meta = if is_map(meta), do: meta, else: %{}

    # (method, trace_id, span_id: binary keys, 1.x; absent from older workers)
    Logger.log(logger_level(level), to_string(message),
      snakepit_worker: name,
      python_logger: meta[:logger],
      call_id: meta[:call_id],
      method: meta["method"],
      trace_id: meta["trace_id"],
      span_id: meta["span_id"]
    )
  end

  def log({:bye, stats}, name) do
    Logger.debug("worker said bye: #{inspect(stats)}", snakepit_worker: name)
  end

  def log(other, name) do
    Logger.warning("ignoring unexpected frame #{inspect(other, limit: 20)}",
      snakepit_worker: name
    )
  end

  defp logger_level(level) when level in [:debug, :info, :warning, :error, :critical], do: level
  defp logger_level(_), do: :info
end
