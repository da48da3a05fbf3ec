defmodule Snakepit.Worker.Wire do
  @moduledoc false
  # Frames on a worker's Port: ETF out, `binary_to_term(bin, [:safe])` in.
  # `{:packet, 4}` framing is the Port's.

  # [:safe] decoding only makes atoms that already exist. These are every atom
  # docs/protocol.md names; listing them here creates them when this module loads,
  # which `decode/1` guarantees happens before the first frame is decoded.
  @protocol_atoms ~w(ready ok error chunk health describe event log bye call cancel credit
    shutdown protocol pid worker_id python version methods threads max_inflight kind type
    message traceback details known signature reason status healthy busy draining uptime_ms
    memory_mb inflight served failed loaded_models extra name doc params required default
    annotation streaming async timeout_ms debug info warning critical logger call_id
    exception unknown_method bad_arguments timeout cancelled unencodable bad_request
    overloaded shutting_down kind positional_only meta credit size limit)a

  @doc "The atoms a frame may hold."
  @spec protocol_atoms() :: [atom()]
  def protocol_atoms, do: @protocol_atoms

  @doc "Decodes one frame; `:error` if the BEAM refuses it (a protocol violation)."
  @spec decode(binary()) :: {:ok, term()} | :error
  def decode(bin) do
    {:ok, :erlang.binary_to_term(bin, [:safe])}
  rescue
    ArgumentError -> :error
  end

  @doc "Sends a frame; with no port, or a port that just died, nothing happens."
  @spec send(port() | nil, term()) :: :ok
  def send(port, frame) when is_port(port) do
    Port.command(port, :erlang.term_to_binary(frame))
    :ok
  rescue
    # The port died under us. It is linked and exits are trapped, so its
    # {:EXIT, port, reason} is on its way (an :exit_status may not be).
    ArgumentError -> :ok
  end

  def send(_port, _frame), do: :ok
end
