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
    overloaded shutting_down kind positional_only meta credit size limit
    features beam_call beam_functions beam_reply beam_cancel unknown_function
    would_deadlock idempotent)a

  # The atoms of the structs a worker's results may hold (docs/types.md): Elixir's
  # calendar types, Decimal (whether or not the Decimal library is loaded: without
  # it a decimal arrives as a map with the struct's fields), Snakepit.Tensor, the
  # tensor types in Nx's notation, and Nx's atoms for NaN and the infinities.
  @type_atoms [DateTime, NaiveDateTime, Date, Time, Calendar.ISO, Decimal, Snakepit.Tensor] ++
                ~w(__struct__ calendar year month day hour minute second microsecond time_zone
    zone_abbr utc_offset std_offset sign coef exp NaN inf type shape data s u f bf c nan
    infinity neg_infinity)a

  @doc "The atoms of the types a result may hold (docs/types.md)."
  @spec type_atoms() :: [atom()]
  def type_atoms, do: @type_atoms

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
