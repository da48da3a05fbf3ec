# A BEAM node serving a pool of Port workers: what the `beam` image and the
# Compose file run (`mix run --no-halt pool.exs` in the harness; a sketch of
# your application's supervision tree, not a mix release).
#
# Environment: SNAKEPIT_TARGET (/app/worker.py), SNAKEPIT_POOL_SIZE (2),
# SNAKEPIT_METRICS_PORT (9568; 0 picks one), SNAKEPIT_GRACE_MS (20000: how
# long calls in flight get on SIGTERM), SNAKEPIT_PYTHON (the venv's python).

defmodule Deploy.Drain do
  # SIGTERM stops the pool first, so each worker finishes its calls in flight
  # (:shutdown_grace), then the node. OTP's own handler would call
  # :init.stop/0 at once, which kills processes outside applications (this
  # script's supervisor) without running their shutdown.
  @moduledoc false
  @behaviour :gen_event

  # swap_handler/3 passes {our argument, what the old handler's terminate returned}
  def init({sup, _old}), do: {:ok, sup}

  def handle_event(:sigterm, sup) do
    spawn(fn ->
      IO.puts("snakepit: SIGTERM, draining the pool")
      Supervisor.stop(sup, :shutdown, :infinity)
      :init.stop()
    end)

    {:ok, sup}
  end

  def handle_event(signal, sup) do
    # every other signal as OTP's handler treats it (SIGUSR1: crash dump, SIGQUIT: halt)
    :erl_signal_handler.handle_event(signal, :undefined)
    {:ok, sup}
  end

  def handle_call(_request, sup), do: {:ok, :ok, sup}
end

env = fn name, default -> System.get_env(name, default) end
grace = String.to_integer(env.("SNAKEPIT_GRACE_MS", "20000"))

children = [
  {Snakepit.Pool,
   name: :ml,
   target: env.("SNAKEPIT_TARGET", "/app/worker.py"),
   size: String.to_integer(env.("SNAKEPIT_POOL_SIZE", "2")),
   # recycling: replace a worker above 400 MB of RSS (keep it under the
   # container's memory limit, with the :health_interval margin) or after
   # 100_000 calls
   max_memory_mb: 400,
   max_calls: 100_000,
   shutdown_grace: grace},
  {Snakepit.Metrics,
   port: String.to_integer(env.("SNAKEPIT_METRICS_PORT", "9568")), ip: {0, 0, 0, 0}}
]

{:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
# the script's process stays alive under --no-halt; the supervisor must not die with a link
Process.unlink(sup)
:gen_event.swap_handler(:erl_signal_server, {:erl_signal_handler, []}, {Deploy.Drain, sup})

IO.puts("snakepit: pool :ml ready, metrics on port #{Snakepit.Metrics.port()}")
