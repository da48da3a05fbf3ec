defmodule Snakepit.Error do
  @moduledoc """
  Why a call failed.

  `kind` says which family the failure belongs to. The Python worker reports
  (docs/protocol.md §5):

    * `:exception` - user code raised; `type`, `message` and `traceback` are
      the Python exception's
    * `:unknown_method`, `:bad_arguments`, `:timeout`, `:cancelled`,
      `:unencodable`, `:bad_request`, `:overloaded`, `:shutting_down`

  The harness adds:

    * `:worker_crashed` - the Python process ended while the call was in
      flight: it exited or was killed (`details.exit_status`), its port
      closed with an error and no exit status (`details.port_closed`, e.g.
      `:epipe`), or the harness killed it because another call ignored its
      cancel (`details.killed_for`, that call's id). `message` ends with the
      last lines of the process's output (a segfault's faulthandler report),
      also in `details.output_tail`
    * `:worker_hung` - the Python process left `:hung_after` health polls in a
      row unanswered (stopped, deadlocked, or stuck in C code holding the
      GIL); it was killed and is being replaced. `details.missed_polls`
    * `:protocol_error` - the worker sent a frame the BEAM refused to decode
    * `:start_failed` - the worker never sent `:ready`; `message` ends with the
      tail of its stderr
    * `:timeout` - also used when the caller's own timeout runs out first
    * `:cancelled` - also used when a cancelled call did not end within
      `:cancel_grace` and its Python process was killed
      (`details.reason == "killed"`)
    * `:noproc` - the pool or worker is not running
    * `:node_down` - the call went to a member of a distributed pool on
      another node, and the connection to that node was lost before it
      answered (`details.node`); the call may or may not have run there

  `details` is the protocol's `details` map (e.g. `known` method names for
  `:unknown_method`, `signature` for `:bad_arguments`).
  """

  defexception kind: nil, type: nil, message: "", traceback: nil, details: %{}

  @type kind ::
          :exception
          | :unknown_method
          | :bad_arguments
          | :timeout
          | :cancelled
          | :unencodable
          | :bad_request
          | :overloaded
          | :shutting_down
          | :worker_crashed
          | :worker_hung
          | :protocol_error
          | :start_failed
          | :noproc
          | :node_down

  @type t :: %__MODULE__{
          kind: kind() | atom(),
          type: String.t() | nil,
          message: String.t(),
          traceback: String.t() | nil,
          details: map()
        }

  @doc "Builds an error from the protocol's error map."
  @spec from_wire(term()) :: t()
  def from_wire(%{} = map) do
    %__MODULE__{
      kind: wire_kind(Map.get(map, :kind)),
      type: Map.get(map, :type),
      message: to_text(Map.get(map, :message, "")),
      traceback: Map.get(map, :traceback),
      details: map_or_empty(Map.get(map, :details))
    }
  end

  def from_wire(other) do
    %__MODULE__{kind: :protocol_error, message: "malformed error from worker: #{inspect(other)}"}
  end

  @doc false
  @spec new(atom(), String.t(), keyword()) :: t()
  def new(kind, message, fields \\ []) do
    struct!(%__MODULE__{kind: kind, message: message}, fields)
  end

  @impl true
  def message(%__MODULE__{kind: :exception} = error) do
    head = "Python #{error.type || "exception"}: #{error.message}"
    with_traceback(head, error.traceback)
  end

  def message(%__MODULE__{} = error) do
    type = if error.type, do: " (#{error.type})", else: ""
    with_traceback("#{error.kind}#{type}: #{error.message}", error.traceback)
  end

  defp with_traceback(head, tb) when is_binary(tb) and tb != "",
    do: head <> "\n\n" <> String.trim_trailing(tb)

  defp with_traceback(head, _tb), do: head

  defp wire_kind(kind) when is_atom(kind) and not is_nil(kind), do: kind
  defp wire_kind(_), do: :protocol_error

  defp to_text(text) when is_binary(text), do: text
  defp to_text(other), do: inspect(other)

  defp map_or_empty(%{} = map), do: map
  defp map_or_empty(_), do: %{}
end
