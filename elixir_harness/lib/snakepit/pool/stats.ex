defmodule Snakepit.Pool.Stats do
  @moduledoc false
  # `Snakepit.Pool.stats/1`'s map, from the pool's state.

  alias Snakepit.Call
  alias Snakepit.Pool.Breakers

  @doc "The stats map (see `Snakepit.Pool.stats/1`)."
  @spec of(map()) :: map()
  def of(state) do
    now = Call.now_ms()
    statuses = Map.new(state.workers, fn {pid, w} -> {pid, status_of(w)} end)
    count = fn status -> Enum.count(statuses, fn {_, s} -> s == status end) end
    actual = Enum.count(state.workers, fn {_, w} -> w.retiring == nil end)

    Map.merge(Breakers.stats(state.breaker, now), %{
      workers: state.target,
      target_size: state.target,
      actual_size: actual,
      min_size: state.cfg.min_size,
      max_size: state.cfg.max_size,
      last_scaled:
        state.last_scaled &&
          state.last_scaled |> Map.delete(:at) |> Map.put(:ago_ms, now - state.last_scaled.at),
      ready: count.(:idle) + count.(:busy),
      busy: count.(:busy),
      idle: count.(:idle),
      draining: count.(:draining),
      down: max(actual - count.(:idle) - count.(:busy), 0),
      inflight: map_size(state.calls),
      queue_depth: state.qlen,
      max_queue: state.cfg.max_queue,
      avg_queue_time_ms:
        if(state.dispatched == 0, do: 0.0, else: state.queue_time_us / state.dispatched / 1000),
      served: state.workers |> Map.values() |> Enum.map(& &1.served) |> Enum.sum(),
      restarts: state.restarts,
      shed: state.shed,
      queue_timeouts: state.queue_timeouts,
      retried: state.retried,
      recycled: state.recycled,
      reload: reload_stats(state),
      worker_details:
        state.workers
        |> Enum.sort_by(fn {_, w} -> to_string(w.worker_id) end)
        |> Enum.map(fn {pid, w} ->
          %{
            worker_id: w.worker_id,
            os_pid: w.os_pid,
            guard_pid: w.guard_pid,
            status: statuses[pid],
            inflight: map_size(w.inflight),
            threads: w.threads,
            max_inflight: w.max_inflight,
            served: w.served,
            loaded_models: w.models |> MapSet.to_list() |> Enum.sort(),
            memory_mb: w.memory_mb,
            due: w.retiring || w.due
          }
        end)
    })
    |> cluster(state)
  end

  # a distributed pool's view of its cluster (Pool.Cluster.stats/1)
  defp cluster(stats, %{cluster: nil}), do: stats

  defp cluster(stats, state),
    do: Map.put(stats, :cluster, Snakepit.Pool.Cluster.stats(state.name))

  defp reload_stats(%{reload: nil}), do: nil

  defp reload_stats(%{reload: r} = state) do
    left = Enum.count(state.workers, fn {_, w} -> w.gen < r.gen end) + r.stale_pending
    %{in_progress: left > 0, done: r.total - left, total: r.total}
  end

  # :busy: at least one call in flight (it may still have room for more).
  defp status_of(%{status: :down}), do: :down
  defp status_of(%{status: :draining}), do: :draining
  defp status_of(%{inflight: inflight}) when map_size(inflight) > 0, do: :busy
  defp status_of(_w), do: :idle
end
