defmodule Snakepit.Metrics.Exposition do
  @moduledoc false
  # What a scrape of `Snakepit.Metrics` shows: the pools' own families (from
  # `Snakepit.Pool.stats/1` at scrape time and the table's histograms and
  # counters) and the Python workers' families (their reports summed by
  # pool), rendered by `Snakepit.Metrics.TextFormat`. Names, units and
  # labels: `docs/observability.md`.

  alias Snakepit.Metrics.{Reports, Store}

  import Snakepit.Metrics.TextFormat, only: [family: 4, histogram_family: 3]

  @doc "The exposition text for pools `which` (`:all`: every running `Snakepit.Pool`)."
  @spec text(:all | [atom()]) :: String.t()
  def text(which) do
    pools = pools(which)
    stats = for name <- pools, s = stats(name), s != nil, do: {Reports.label(name), s}
    rows = Store.rows()

    IO.iodata_to_binary([
      pool_families(stats, rows),
      python_families(Reports.by_pool(rows))
    ])
  end

  defp pools(:all) do
    for name <- Process.registered(),
        pid = Process.whereis(name),
        pid != nil,
        initial_call(pid) == {Snakepit.Pool, :init, 1},
        do: name
  end

  defp pools(names) when is_list(names), do: names

  defp initial_call(pid) do
    case Process.info(pid, :dictionary) do
      {:dictionary, dict} -> Keyword.get(dict, :"$initial_call")
      nil -> nil
    end
  end

  defp stats(name) do
    Snakepit.Pool.stats(name)
  catch
    :exit, _ -> nil
  end

  defp pool_families(stats, rows) do
    [
      family(
        "snakepit_pool_queue_depth",
        "gauge",
        "Calls waiting in the pool's queue.",
        for({pool, s} <- stats, do: {[pool: pool], s.queue_depth})
      ),
      family(
        "snakepit_pool_workers",
        "gauge",
        "Workers of the pool, by state.",
        for(
          {pool, s} <- stats,
          state <- [:idle, :busy, :draining, :down],
          do: {[pool: pool, state: state], Map.get(s, state, 0)}
        )
      ),
      histogram_family(
        "snakepit_pool_queue_wait_seconds",
        "Time calls waited in the pool's queue before being sent to a worker.",
        for(
          {{:h, {:pool_queue_wait, pool}}, sum, buckets} <- Store.histograms(rows),
          do: {[pool: pool], sum, buckets}
        )
      ),
      histogram_family(
        "snakepit_pool_call_duration_seconds",
        "Time from a call being sent to a Python process to its end, by outcome.",
        for(
          {{:h, {:pool_call_duration, pool, method, outcome}}, sum, buckets} <-
            Store.histograms(rows),
          do: {[pool: pool, method: method, outcome: outcome], sum, buckets}
        )
      ),
      family(
        "snakepit_worker_restarts_total",
        "counter",
        "Python processes restarted, by the error that ended the previous one.",
        for({{:c, {:restarts, pool, reason}}, n} <- rows, do: {[pool: pool, reason: reason], n})
      )
    ]
  end

  defp python_families(by_pool) do
    pools = Enum.sort(by_pool)

    per = fn fun -> for {pool, {c, g}} <- pools, item <- fun.(pool, c, g), do: item end

    [
      family(
        "snakepit_calls_total",
        "counter",
        "Calls the Python workers answered, by method and outcome.",
        per.(fn pool, c, _ ->
          for {method, e} <- Map.get(c, "methods", %{}),
              {outcome, n} <- [{"ok", Reports.ok(e)} | Enum.to_list(Map.get(e, "errors", %{}))],
              do: {[pool: pool, method: method, outcome: outcome], n}
        end)
      ),
      histogram_family(
        "snakepit_call_duration_seconds",
        "Time calls ran in the Python workers.",
        per.(fn pool, c, _ ->
          for {method, e} <- Map.get(c, "methods", %{}),
              do: {[pool: pool, method: method], e["sum_ns"], e["buckets"]}
        end)
      ),
      histogram_family(
        "snakepit_queue_wait_seconds",
        "Time calls waited inside the Python workers before running.",
        per.(fn pool, c, _ ->
          for e <- List.wrap(c["queue_wait"]), do: {[pool: pool], e["sum_ns"], e["buckets"]}
        end)
      ),
      family(
        "snakepit_stream_chunks_total",
        "counter",
        "Chunks streamed by the Python workers, by method.",
        per.(fn pool, c, _ ->
          for {method, e} <- Map.get(c, "methods", %{}),
              Map.get(e, "chunks", 0) > 0,
              do: {[pool: pool, method: method], e["chunks"]}
        end)
      ),
      family(
        "snakepit_refused_calls_total",
        "counter",
        "Calls the Python workers refused before running, by kind.",
        per.(fn pool, c, _ ->
          for {kind, n} <- Map.get(c, "refused", %{}), do: {[pool: pool, kind: kind], n}
        end)
      ),
      family(
        "snakepit_inflight_calls",
        "gauge",
        "Calls in flight in the Python workers.",
        per.(fn pool, _, g -> [{[pool: pool], Map.get(g, "inflight", 0)}] end)
      ),
      family(
        "snakepit_loaded_models",
        "gauge",
        "Models the Python workers have loaded.",
        per.(fn pool, _, g -> [{[pool: pool], Map.get(g, "loaded_models", 0)}] end)
      ),
      histogram_family(
        "snakepit_model_load_seconds",
        "Time models took to load in the Python workers.",
        per.(fn pool, c, _ ->
          for e <- List.wrap(c["model_loads"]), do: {[pool: pool], e["sum_ns"], e["buckets"]}
        end)
      ),
      family(
        "snakepit_beam_calls_total",
        "counter",
        "Calls from the Python workers into the BEAM, by function and outcome.",
        per.(fn pool, c, _ ->
          for {fun, e} <- Map.get(c, "beam_calls", %{}),
              {outcome, n} <- [{"ok", Reports.ok(e)} | Enum.to_list(Map.get(e, "errors", %{}))],
              do: {[pool: pool, function: fun, outcome: outcome], n}
        end)
      ),
      family(
        "snakepit_worker_cpu_seconds_total",
        "counter",
        "CPU time of the Python worker processes.",
        per.(fn pool, c, _ -> [{[pool: pool], get_in(c, ["process", "cpu_seconds"]) || 0}] end)
      ),
      family(
        "snakepit_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of the Python worker processes.",
        per.(fn pool, _, g ->
          [{[pool: pool], get_in(g, ["process", "resident_memory_bytes"]) || 0}]
        end)
      )
    ]
  end
end
