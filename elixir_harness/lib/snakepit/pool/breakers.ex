defmodule Snakepit.Pool.Breakers do
  @moduledoc false
  # The pool's circuit breakers (`circuit_breaker: [...]`): one for the pool,
  # and with `per_method: true` one per method too. Each is a
  # `Snakepit.Pool.Circuit`; this module decides what counts against which.
  #
  # Infrastructure failures count: a worker's Python process crashing or
  # hanging (against the methods of the calls in flight on it, or the pool
  # when none were), a worker failing to start (the pool), a call ending in
  # `:timeout` from Python or its caller giving up at its deadline (its
  # method). A user exception is not one: the code ran and answered. A call
  # refused at once (`:overloaded`, `:queue_timeout`) counts neither way.
  #
  # These functions take and return the pool's state map and own its
  # `:breaker` (nil when off): `%{pool: circuit, methods: %{name => circuit},
  # per_method: bool, opts: keyword, track: %{ref => {method, deadline}}}`.

  alias Snakepit.Error
  alias Snakepit.Pool.{Circuit, Events}

  @infra [:timeout, :worker_crashed, :worker_hung, :protocol_error, :start_failed]
  @neutral [:cancelled, :overloaded, :shutting_down, :queue_timeout, :circuit_open]

  @doc "The breakers for a pool's `circuit_breaker` option (nil: none)."
  @spec new(keyword() | nil) :: map() | nil
  def new(nil), do: nil

  def new(opts) do
    circuit_opts = Keyword.take(opts, [:threshold, :window, :cooldown])

    %{
      pool: Circuit.new(circuit_opts),
      methods: %{},
      per_method: Keyword.get(opts, :per_method, false),
      opts: circuit_opts,
      track: %{}
    }
  end

  @doc "May `call` go through? `{:ok, state}` or `{:refuse, error, state}` (`:circuit_open`)."
  @spec admit(map(), map(), integer()) :: {:ok, map()} | {:refuse, Error.t(), map()}
  def admit(call, %{breaker: b} = state, now) do
    scopes = if b.per_method, do: [:pool, {:method, call.method}], else: [:pool]

    Enum.reduce_while(scopes, {:ok, state}, fn scope, {:ok, state} ->
      c = circuit(state.breaker, scope)

      case Circuit.check(c, now) do
        {:ok, c2} ->
          {:cont, {:ok, put(state, scope, c, c2, nil)}}

        {:probe, c2} ->
          {:cont, {:ok, put(state, scope, c, Circuit.probe(c2, call.ref), nil)}}

        {:open, left} ->
          # a probe granted by an earlier scope will not run
          state = release(call.ref, state)

          error =
            Error.new(:circuit_open, "the circuit #{scope_text(scope)}is open: failing fast",
              details: %{scope: scope_detail(scope), retry_in_ms: left}
            )

          {:halt, {:refuse, error, state}}
      end
    end)
  end

  @doc "Call `call` was sent to a worker: its outcome will be counted."
  @spec dispatched(map(), map()) :: map()
  def dispatched(call, %{breaker: b} = state) do
    %{state | breaker: %{b | track: Map.put(b.track, call.ref, {call.method, call.deadline})}}
  end

  @doc "Call `ref` ended; `kind` nil for success, else its error kind."
  @spec outcome(reference(), atom() | nil, map(), integer()) :: map()
  def outcome(ref, kind, %{breaker: b} = state, now) do
    case Map.pop(b.track, ref) do
      {nil, _} ->
        state

      {{method, _}, track} ->
        state = %{state | breaker: %{b | track: track}}

        cond do
          kind in @infra -> failure(state, method, now)
          kind in @neutral -> release(ref, state)
          true -> success(ref, method, state)
        end
    end
  end

  @doc "The caller of in-flight call `ref` gave up: at its deadline, that is a timeout."
  @spec caller_gave_up(reference(), map(), integer()) :: map()
  def caller_gave_up(ref, %{breaker: b} = state, now) do
    case b.track do
      %{^ref => {method, deadline}} when is_integer(deadline) and now >= deadline ->
        state = %{state | breaker: %{b | track: Map.delete(b.track, ref)}}
        failure(state, method, now)

      _ ->
        state
    end
  end

  @doc "A worker's process crashed or hung with calls `refs` in flight."
  @spec worker_down([reference()], map(), integer()) :: map()
  def worker_down(refs, %{breaker: b} = state, now) do
    {methods, track} =
      Enum.reduce(refs, {MapSet.new(), b.track}, fn ref, {ms, track} ->
        case Map.pop(track, ref) do
          {{method, _}, track} -> {MapSet.put(ms, method), track}
          {nil, track} -> {ms, track}
        end
      end)

    state = %{state | breaker: %{b | track: track}}

    if b.per_method and MapSet.size(methods) > 0,
      do: Enum.reduce(methods, state, &failure(&2, &1, now)),
      else: failure(state, nil, now)
  end

  @doc "Call `ref` of `method` was on a worker that crashed and is retried (per-method only)."
  @spec retried(map(), map(), integer()) :: map()
  def retried(call, %{breaker: %{per_method: true}} = state, now),
    do: failure(state, call.method, now)

  def retried(_call, state, _now), do: state

  @doc "A worker failed to start."
  @spec start_failed(map(), integer()) :: map()
  def start_failed(state, now), do: failure(state, nil, now)

  @doc "Call `ref` will not run (refused, cancelled while queued): if it was a probe, the next call probes."
  @spec release(reference(), map()) :: map()
  def release(_ref, %{breaker: nil} = state), do: state

  def release(ref, %{breaker: b} = state) do
    methods = Map.new(b.methods, fn {m, c} -> {m, Circuit.release(c, ref)} end)
    %{state | breaker: %{b | pool: Circuit.release(b.pool, ref), methods: methods}}
  end

  @doc "`circuit` (the pool's) and `circuits` (per method) for stats."
  @spec stats(map() | nil, integer()) :: map()
  def stats(nil, _now), do: %{circuit: :closed, circuits: %{}}

  def stats(b, now) do
    %{
      circuit: Circuit.state(b.pool, now),
      circuits: Map.new(b.methods, fn {m, c} -> {m, Circuit.state(c, now)} end)
    }
  end

  # An infrastructure failure: the method's circuit (per_method), else the pool's.
  defp failure(%{breaker: b} = state, method, now) do
    scope = if b.per_method and method != nil, do: {:method, method}, else: :pool
    c = circuit(b, scope)
    put(state, scope, c, Circuit.failure(c, now), "infrastructure failures")
  end

  defp success(ref, method, %{breaker: b} = state) do
    state = put(state, :pool, b.pool, Circuit.success(b.pool, ref), nil)

    case state.breaker.methods do
      %{^method => c} -> put(state, {:method, method}, c, Circuit.success(c, ref), nil)
      _ -> state
    end
  end

  defp circuit(b, :pool), do: b.pool
  defp circuit(b, {:method, m}), do: Map.get_lazy(b.methods, m, fn -> Circuit.new(b.opts) end)

  # Stores circuit `new` (was `old`) and announces a change of state.
  defp put(%{breaker: b} = state, scope, old, new, why) do
    b =
      case scope do
        :pool -> %{b | pool: new}
        {:method, m} -> %{b | methods: Map.put(b.methods, m, new)}
      end

    if old.state != new.state,
      do:
        Events.emit(
          state.name,
          state.cfg.events,
          {:circuit, scope, new.state, why_text(new, why)}
        )

    %{state | breaker: b}
  end

  defp why_text(%{state: :open} = c, why), do: "#{why || "failures"}; cooldown #{c.cooldown} ms"
  defp why_text(_c, _why), do: nil

  defp scope_text(:pool), do: ""
  defp scope_text({:method, m}), do: "for #{m} "

  defp scope_detail(:pool), do: :pool
  defp scope_detail({:method, m}), do: m
end
