defmodule Snakepit.Worker.Callers do
  @moduledoc false
  # Which processes a worker watches, so that a caller that dies has its calls
  # cancelled rather than run for nobody.
  #
  # These functions take and return the worker's state map: they own its
  # `:callers` (pid => monitor ref) and `:callers_limit`, and read `:calls`
  # (id => call map with `:caller`). Taking the whole state keeps `watch/2`,
  # which runs for every call sent, to one map match when the caller is known.
  #
  # A caller stays monitored after its call ends: a process that calls again
  # and again costs one monitor, not a monitor and a demonitor per call. When
  # the watch list reaches its limit, callers with nothing in flight are let
  # go; the limit then doubles past what is left, so a flood of live callers
  # costs an amortised constant per call, never a scan per call.

  @min_limit 1_024

  @doc "The fields a new worker state starts with."
  @spec new() :: %{callers: map(), callers_limit: pos_integer()}
  def new, do: %{callers: %{}, callers_limit: @min_limit}

  @doc "Monitors `pid` unless it is already watched."
  @spec watch(map(), pid()) :: map()
  def watch(%{callers: callers} = state, pid) do
    case callers do
      %{^pid => _mon} ->
        state

      _ when map_size(callers) >= state.callers_limit ->
        kept = forget_idle(state)
        limit = max(@min_limit, 2 * map_size(kept))
        %{state | callers: Map.put(kept, pid, Process.monitor(pid)), callers_limit: limit}

      _ ->
        %{state | callers: Map.put(callers, pid, Process.monitor(pid))}
    end
  end

  @doc """
  Handles a `:DOWN` for monitor `mon` of `pid`: `{:ok, state, ids}` with the
  caller forgotten and the ids of its calls in flight, or `:error` when the
  monitor is not one of ours.
  """
  @spec down(map(), pid(), reference()) :: {:ok, map(), [non_neg_integer()]} | :error
  def down(%{callers: callers} = state, pid, mon) do
    case callers do
      %{^pid => ^mon} ->
        ids = for {id, %{caller: ^pid}} <- state.calls, do: id
        {:ok, %{state | callers: Map.delete(callers, pid)}, ids}

      _ ->
        :error
    end
  end

  defp forget_idle(%{callers: callers, calls: calls}) do
    busy = for {_id, %{caller: pid}} <- calls, into: MapSet.new(), do: pid

    for {pid, mon} <- callers, reduce: callers do
      acc ->
        if MapSet.member?(busy, pid) do
          acc
        else
          Process.demonitor(mon, [:flush])
          Map.delete(acc, pid)
        end
    end
  end
end
