defmodule Snakepit.Worker.Health do
  @moduledoc false
  # Questions to the Python process that are not calls (`:health`,
  # `:describe`), and the health poll built on them: every `:health_interval`
  # ms one poll goes out; each tick that finds it still unanswered is a miss,
  # and `:hung_after` misses in a row make the process hung (see
  # `Snakepit.Worker.Crash.hung/1`). Health reports and `"loaded_models"`
  # events tell the pool which affinity keys this worker holds.
  #
  # These functions take and return the worker's state map and own its
  # `:asks` (id => {what, from | :poll}), `:health_poll` and `:health_misses`.

  alias Snakepit.Worker.{Crash, Wire}

  @doc "Sends `what` (`:health` or `:describe`); the answer goes to `from` (or is a poll's)."
  @spec ask(:health | :describe, GenServer.from() | :poll, map()) :: map()
  def ask(what, from, state) do
    id = state.next_id
    Wire.send(state.port, {what, id})
    %{state | next_id: id + 1, asks: Map.put(state.asks, id, {what, from})}
  end

  @doc "The answer to ask `id` arrived."
  @spec answer(:health | :describe, non_neg_integer(), term(), map()) :: map()
  def answer(what, id, answer, state) do
    case Map.pop(state.asks, id) do
      {{^what, :poll}, asks} ->
        state = report(answer, state)
        %{state | asks: asks, health_poll: false, health_misses: 0}

      {{^what, from}, asks} ->
        state = if what == :health, do: report(answer, state), else: state
        GenServer.reply(from, {:ok, answer})
        %{state | asks: asks}

      {nil, _} ->
        state
    end
  end

  @doc "A poll tick: polls, or counts a miss; the process is killed as hung at `:hung_after`."
  @spec tick(map()) :: map()
  def tick(state) do
    state =
      if state.health_poll,
        do: %{state | health_misses: state.health_misses + 1},
        else: %{ask(:health, :poll, state) | health_poll: true}

    if state.health_misses >= state.opts[:hung_after] do
      Crash.hung(state)
    else
      schedule(state)
      state
    end
  end

  @doc "Schedules the next tick for the current process (none with `health_interval: nil`)."
  @spec schedule(map()) :: term()
  def schedule(%{opts: opts, port: port}) do
    if interval = opts[:health_interval],
      do: Process.send_after(self(), {:"$snakepit_health_tick", port}, interval)
  end

  # A health report: its models, and its "metrics" (a binary key, protocol 1.x) for
  # Snakepit.Metrics.
  defp report(answer, state) do
    if is_map(answer), do: Snakepit.Metrics.Store.worker_report(state.pool, answer["metrics"])
    notify_models(answer, state)
  end

  @doc """
  Tells the pool (if any) the keys a report lists as `loaded_models`, and emits
  `[:snakepit, :models, :changed]` when they changed.
  """
  @spec notify_models(term(), map()) :: map()
  def notify_models(%{loaded_models: models}, state) when is_list(models) do
    if state.pool != nil, do: send(state.pool, {:"$snakepit_models", self(), models})

    if models != Map.get(state, :models) do
      Snakepit.Telemetry.execute(
        [:snakepit, :models, :changed],
        %{count: length(models)},
        %{pool: state.pool, worker: self(), worker_id: state.worker_id, models: models}
      )
    end

    Map.put(state, :models, models)
  end

  def notify_models(_report, state), do: state
end
