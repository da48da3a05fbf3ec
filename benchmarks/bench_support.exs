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
