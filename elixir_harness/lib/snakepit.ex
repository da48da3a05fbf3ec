defmodule Snakepit do
  @moduledoc """
  Call Python from Elixir through a supervised pool of Python processes.

  Each worker is a Python process running `python -m snakepit_py worker
  TARGET`, spoken to over an Erlang Port with the protocol in
  `docs/protocol.md`. State lives in Python (a worker class's
  attributes); the BEAM side only routes messages, supervises and restarts.

  Run from `elixir_harness/` (a relative target is resolved against the `:cd`
  option, by default the BEAM's current directory):

      iex> {:ok, _} = Snakepit.Pool.start_link(name: :ml, target: "../examples/ml_worker.py", size: 3)
      iex> {:ok, _} = Snakepit.call(:ml, %{method: "load_model", args: ["gpt2"]})
      iex> {:ok, prediction} = Snakepit.call(:ml, %{method: "predict", args: ["gpt2", "good"]}, affinity: "gpt2")
      iex> prediction["label"]
      "positive"
      iex> {:error, error} = Snakepit.call(:ml, %{method: "predict", args: ["nope", "hi"]})
      iex> {error.kind, error.type}
      {:exception, "LookupError"}

  See `Snakepit.Pool`, `Snakepit.Worker`, `Snakepit.Stream` and `Snakepit.Error`.
  """

  alias Snakepit.{Call, Error}

  @typedoc "`%{method: name, args: list, kwargs: map}`; `args` and `kwargs` are optional."
  @type request :: %{
          required(:method) => String.t() | atom(),
          optional(:args) => list(),
          optional(:kwargs) => map()
        }

  @doc """
  Calls `request.method` on a worker of `pool` and waits for its result.

  Options:

    * `:timeout` - ms (default 5_000), queueing time included. When it runs
      out the call is cancelled in Python and `{:error, %Snakepit.Error{kind:
      :timeout}}` returned; the Python side is also told, as `timeout_ms`.
    * `:affinity` - route to a worker that has this key loaded (see `Snakepit.Pool`)
    * `:meta` - a map handed to the Python method as `current_call().meta`
    * `:traceparent` - a W3C `traceparent` (`"00-<trace id>-<span id>-01"`),
      put into the meta as `"traceparent"`: the Python method runs in a span
      continuing that trace (docs/observability.md). From an OpenTelemetry
      Elixir app: `:otel_propagator_text_map.inject([])` gives the headers of
      the current context; pass its `"traceparent"`

  On a pool started with `distributed: true` the call may run on a member
  of the same pool on another connected node (docs/pool.md, "Pools across
  nodes"); if that node goes away first the call fails with `:node_down`.

  Returns `{:ok, result}` or `{:error, %Snakepit.Error{}}`; it does not raise
  for failures on the Python side or crashes of the worker.
  """
  @spec call(atom() | pid(), request(), keyword()) :: {:ok, term()} | {:error, Error.t()}
  def call(pool, request, opts \\ []) do
    call = Call.build!(request, opts, default_timeout: 5_000)

    # a pool started with `distributed: true` may send the call to another node
    case Snakepit.Pool.Cluster.lookup(pool) do
      nil -> Call.run(pool, call)
      cluster -> Snakepit.Pool.Cluster.run(pool, cluster, call)
    end
  end
end
