defmodule Snakepit.Metrics.Reports do
  @moduledoc false
  # The Python workers' own numbers (the `"metrics"` of their health
  # reports), as plain maps: which survive a process (counters) and which go
  # with it (gauges), adding two reports, and summing the table's worker rows
  # by pool label, so series are per pool and never churn with worker pids.

  @doc "The pool label of a pool name (`\"none\"` for nil)."
  def label(nil), do: "none"
  def label(name) when is_binary(name), do: name
  def label(name), do: to_string(name)

  @doc "pool label => {counters summed (live, ended and retired), gauges of live processes}."
  def by_pool(rows) do
    Enum.reduce(rows, %{}, fn
      {{:py, _pid}, pool, base, current}, acc ->
        counts = add(base, counters(current || %{}))
        gauges = gauges(current)

        Map.update(acc, label(pool), {counts, gauges}, fn {c, g} ->
          {add(c, counts), add(g, gauges)}
        end)

      {{:retired, pool}, counts}, acc ->
        Map.update(acc, label(pool), {counts, %{}}, fn {c, g} -> {add(c, counts), g} end)

      _, acc ->
        acc
    end)
  end

  @doc "What survives a process: everything but the gauges."
  def counters(report) when is_map(report) do
    report
    |> Map.take(["methods", "queue_wait", "refused", "model_loads", "beam_calls"])
    |> Map.put("process", %{"cpu_seconds" => get_in(report, ["process", "cpu_seconds"]) || 0})
    |> recount()
  end

  # a method's "ok" is derived again after adding (count - errors)
  defp recount(counts),
    do:
      update_in(
        counts,
        [Access.key("methods", %{})],
        &Map.new(&1, fn {m, e} -> {m, Map.delete(e, "ok")} end)
      )

  defp gauges(nil), do: %{}

  defp gauges(report) do
    %{
      "inflight" => Map.get(report, "inflight", 0),
      "loaded_models" => Map.get(report, "loaded_models", 0),
      "process" => %{
        "resident_memory_bytes" => get_in(report, ["process", "resident_memory_bytes"]) || 0
      }
    }
  end

  @doc "Two reports added: numbers summed, maps merged deeply, anything else the newer."
  def add(a, b) when is_map(a) and is_map(b), do: Map.merge(a, b, fn _k, x, y -> add(x, y) end)
  def add(a, b) when is_number(a) and is_number(b), do: a + b
  def add(_a, b), do: b

  @doc "A method's (or BEAM function's) calls that ended ok: count - errors."
  def ok(e),
    do: Map.get(e, "count", 0) - (e |> Map.get("errors", %{}) |> Map.values() |> Enum.sum())
end
