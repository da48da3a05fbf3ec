defmodule Snakepit.Pool.Events do
  @moduledoc false
  # What a pool tells the outside world when its shape changes: a circuit
  # opening or closing, a scale up or down, a worker being recycled, a reload
  # finished. Each event is logged and sent as `{:snakepit_pool, pool, event}`
  # to the pids and names in the pool's `:events` option (never a function:
  # nothing of the user's runs in the routing process).

  require Logger

  @doc "Emits `event` for pool `name` to `to` (pids or names)."
  @spec emit(atom(), [pid() | atom()], tuple()) :: :ok
  def emit(name, to, event) do
    Logger.log(level(event), "pool #{inspect(name)}: #{describe(event)}")

    Enum.each(to, fn dest ->
      try do
        send(dest, {:snakepit_pool, name, event})
      rescue
        # a name nobody holds any more
        ArgumentError -> :ok
      end
    end)
  end

  defp level({:circuit, _, :open, _}), do: :warning
  defp level(_), do: :info

  defp describe({:circuit, scope, state, why}),
    do: "circuit #{scope_text(scope)}is #{state}#{if why, do: " (#{why})", else: ""}"

  defp describe({:scaled, from, to, why}), do: "scaled from #{from} to #{to} workers: #{why}"
  defp describe({:retiring, worker_id, reason}), do: "retiring worker #{worker_id} (#{reason})"
  defp describe({:reload, :done, n}), do: "reload done (#{n} workers replaced)"
  defp describe(other), do: inspect(other)

  defp scope_text(:pool), do: ""
  defp scope_text({:method, m}), do: "for #{m} "
end
