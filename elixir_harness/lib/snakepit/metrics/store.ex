defmodule Snakepit.Metrics.Store do
  @moduledoc false
  # The counts `Snakepit.Metrics` serves, in one named public ETS table
  # written by the processes that count (callers, workers) and read at
  # scrape time. Rows:
  #
  #   * `{{:h, key}, sum_ns, b0, ..., b63}`: a histogram of the events'
  #     durations, counted by the duration's bit length in ns (2**k ns);
  #   * `{{:c, key}, n}`: a counter;
  #   * `{{:py, worker_pid}, pool, base, current}`: a worker's Python
  #     counts: `base` what its ended processes counted, `current` its live
  #     process's last health report (nil once that process ended);
  #   * `{{:retired, pool}, counts}`: what the pool's stopped workers counted.
  #
  # Recording is a no-op while no endpoint runs (`{Snakepit.Metrics, :on}`)
  # and never raises (the table may go between the check and the write).

  alias Snakepit.Metrics.Reports

  @table :snakepit_metrics
  @on {Snakepit.Metrics, :on}
  @zeros List.duplicate(0, 64)

  @doc "Creates the table (the endpoint's process owns it)."
  def create, do: :ets.new(@table, [:named_table, :public, :set, write_concurrency: true])

  @doc "Every row, for a scrape."
  def rows, do: :ets.tab2list(@table)

  @doc "Counts an event of `Snakepit.Telemetry.execute/3` the endpoint serves."
  def observe(event, measurements, metadata) do
    if :persistent_term.get(@on, false), do: record(event, measurements, metadata)
    :ok
  end

  defp record([:snakepit, :call, end_], m, meta) when end_ in [:stop, :exception] do
    pool = Reports.label(meta.pool)
    hist({:pool_call_duration, pool, to_string(meta.method), to_string(meta.outcome)}, m.duration)
    hist({:pool_queue_wait, pool}, m.queue_time)
  end

  defp record([:snakepit, :worker, :restarted], _m, meta),
    do: count({:restarts, Reports.label(meta.pool), to_string(meta.reason)})

  defp record(_event, _m, _meta), do: :ok

  defp hist(key, native) do
    ns = max(System.convert_time_unit(native, :native, :nanosecond), 0)
    key = {:h, key}
    :ets.update_counter(@table, key, [{2, ns}, {3 + min(bits(ns), 63), 1}], hist_row(key))
  rescue
    ArgumentError -> :ok
  end

  defp hist_row(key), do: List.to_tuple([key, 0 | @zeros])

  defp count(key) do
    :ets.update_counter(@table, {:c, key}, {2, 1}, {{:c, key}, 0})
  rescue
    ArgumentError -> :ok
  end

  defp bits(0), do: 0
  defp bits(n), do: bits(Bitwise.bsr(n, 1)) + 1

  @doc "The histogram rows as `{key, sum_ns, %{bit_length => count}}` (empty buckets left out)."
  def histograms(rows) do
    for row <- rows, is_tuple(row), tuple_size(row) == 66 do
      [key, sum | buckets] = Tuple.to_list(row)

      {key, sum,
       buckets
       |> Enum.with_index()
       |> Enum.filter(fn {n, _} -> n > 0 end)
       |> Map.new(fn {n, k} -> {k, n} end)}
    end
  end

  # ------------------------------------------------ the workers' own counts

  @doc "A worker's health report carried `metrics` (its Python process's counts so far)."
  def worker_report(pool, metrics) when is_map(metrics) do
    when_on(fn ->
      base =
        case :ets.lookup(@table, {:py, self()}) do
          [{_, _pool, base, _current}] -> base
          [] -> %{}
        end

      :ets.insert(@table, {{:py, self()}, pool, base, metrics})
    end)
  end

  def worker_report(_pool, _metrics), do: :ok

  @doc "The worker's Python process ended: what it counted is kept; its gauges go."
  def python_ended do
    when_on(fn ->
      case :ets.lookup(@table, {:py, self()}) do
        [{key, pool, base, current}] when is_map(current) ->
          :ets.insert(@table, {key, pool, counted(base, current), nil})

        _ ->
          :ok
      end
    end)
  end

  @doc "The worker itself stops: its counts go to its pool's, so the sums never go down."
  def worker_stopped do
    when_on(fn ->
      case :ets.take(@table, {:py, self()}) do
        [{_key, pool, base, current}] ->
          GenServer.cast(Snakepit.Metrics, {:retire, pool, counted(base, current)})

        [] ->
          :ok
      end
    end)
  end

  # What a worker's processes counted: the ended ones' and its live one's last report.
  defp counted(base, current), do: Reports.add(base, Reports.counters(current || %{}))

  # Runs `write` while an endpoint runs; `:ok` either way, and never raises for a
  # table that went between the check and the write.
  defp when_on(write) do
    if :persistent_term.get(@on, false), do: write.()
    :ok
  rescue
    ArgumentError -> :ok
  end

  @doc "Adds a stopped worker's `counts` to its pool's (in the endpoint's process)."
  def retire(pool, counts) do
    key = {:retired, pool}

    old =
      case :ets.lookup(@table, key) do
        [{_, old}] -> old
        [] -> %{}
      end

    :ets.insert(@table, {key, Reports.add(old, counts)})
  end
end
