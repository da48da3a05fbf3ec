# What more than one BEAM benchmark needs (loaded with Code.require_file).

defmodule BenchSupport do
  @doc """
  Waits until worker `id` of `pool` is ready again with another OS pid than
  `old` (its replacement after a kill).
  """
  def await_replacement(pool, id, old) do
    case Enum.find(Snakepit.Pool.stats(pool).worker_details, &(&1.worker_id == id)) do
      %{status: s, os_pid: pid} when s in [:idle, :busy] and pid != old ->
        :ok

      _ ->
        # poll gently: on a pinned core a busy loop would slow the Python start
        Process.sleep(1)
        await_replacement(pool, id, old)
    end
  end
end

defmodule BenchSupport.Stats do
  @moduledoc "Percentiles, paired ratios and the machine's header (for bench_pool.exs)."

  @doc "The `p`th percentile of a list of numbers (nearest rank)."
  def percentile(list, p) do
    sorted = Enum.sort(list)
    Enum.at(sorted, min(length(sorted) - 1, trunc(length(sorted) * p / 100)))
  end

  def median(list), do: percentile(list, 50)

  @doc "`{min, median, max}` of a list."
  def spread(list), do: {Enum.min(list), median(list), Enum.max(list)}

  @doc "The CPUs this OS process may run on (`taskset` shows here), from /proc."
  def cpus_allowed do
    with {:ok, status} <- File.read("/proc/self/status"),
         [_, list] <- Regex.run(~r/Cpus_allowed_list:\s*(\S+)/, status) do
      list
    else
      _ -> "?"
    end
  end

  def fmt(x) when is_float(x), do: :erlang.float_to_binary(x, decimals: 2)
  def fmt(x), do: to_string(x)
end
