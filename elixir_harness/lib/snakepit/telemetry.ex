defmodule Snakepit.Telemetry do
  @moduledoc """
  The events snakepit emits, in the `:telemetry` convention.

  snakepit does not depend on the `:telemetry` library (it has no hex
  dependencies): `execute/3` calls `:telemetry.execute/3` when the host
  application has it (most do, through Phoenix or Ecto), and does nothing
  otherwise. Attach handlers as usual:

      :telemetry.attach_many("my-handler", [
        [:snakepit, :call, :stop],
        [:snakepit, :worker, :crashed]
      ], &MyApp.Telemetry.handle/4, nil)

  Durations are in `:native` time units (`System.convert_time_unit/3`).

  ## Calls

    * `[:snakepit, :call, :start]` - a call is sent to a Python process.
      Measurements: `monotonic_time`, `system_time`. Metadata: `pool` (its
      name, or nil), `worker` (the `Snakepit.Worker` pid), `worker_id`,
      `method`, `stream` (boolean), `traceparent` (or nil).
    * `[:snakepit, :call, :stop]` - its terminal arrived from Python.
      Measurements: `duration` (sent to terminal), `queue_time` (waiting in
      the pool's queue before it was sent; 0 when it was sent at once),
      `monotonic_time`. Metadata: as `:start`, plus `outcome` (`:ok` or the
      error's kind, e.g. `:exception`, `:timeout`) and `error` (a
      `Snakepit.Error`, or nil).
    * `[:snakepit, :call, :exception]` - the call ended without a terminal
      from Python: its process crashed, hung or was killed, or the worker
      stopped. Measurements: `duration`, `queue_time`, `monotonic_time`.
      Metadata: as `:start`, plus `kind` (`:error`), `reason` (the
      `Snakepit.Error` the caller got) and `outcome` (its kind).

  ## Workers

    * `[:snakepit, :worker, :ready]` - a Python process sent `:ready`.
      Measurements: `startup_time` (from launch), `system_time`. Metadata:
      `pool`, `worker`, `worker_id`, `os_pid`, `restarts`.
    * `[:snakepit, :worker, :crashed]` - a Python process ended or was
      killed, or did not start. Measurements: `inflight` (calls it failed),
      `system_time`. Metadata: `pool`, `worker`, `worker_id`, `os_pid`,
      `reason` (the error kind: `:worker_crashed`, `:worker_hung`,
      `:protocol_error`, `:start_failed`...), `error`.
    * `[:snakepit, :worker, :hung]` - a Python process left `:hung_after`
      health polls unanswered (it is killed; `:crashed` follows).
      Measurements: `missed_polls`, `system_time`. Metadata as `:crashed`.
    * `[:snakepit, :worker, :restarted]` - a new Python process is started
      after one ended. Measurements: `restarts` (this worker's count),
      `backoff` (the delay waited, native units). Metadata: `pool`, `worker`,
      `worker_id`, `reason` (the previous process's error kind).

    * `[:snakepit, :worker, :event]` - Python code called
      `snakepit.publish(name, data)` (any event but `"loaded_models"`,
      which is `[:snakepit, :models, :changed]`). Measurements:
      `system_time`. Metadata: `pool`, `worker`, `worker_id`, `name` (the
      event's name, a binary), `data` (as Python sent it).

  ## Pools and models

    * `[:snakepit, :pool, :queue]` - a pool's queue changed. Measurements:
      `depth` (calls waiting now). Metadata: `pool`, `change` (`:in` or
      `:out`).
    * `[:snakepit, :models, :changed]` - a worker's loaded models changed
      (a health report or a `"loaded_models"` event). Measurements: `count`.
      Metadata: `pool`, `worker`, `worker_id`, `models`.

  `Snakepit.Metrics` (a Prometheus endpoint) counts the same events without
  the `:telemetry` library.
  """

  @key {__MODULE__, :telemetry_loaded}

  @doc """
  Emits `event`: to `:telemetry.execute/3` when that module is loaded, and to
  `Snakepit.Metrics` when it runs. Never raises for a missing library.
  """
  @spec execute([atom(), ...], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    if telemetry?(), do: apply(:telemetry, :execute, [event, measurements, metadata])
    Snakepit.Metrics.Store.observe(event, measurements, metadata)
    :ok
  end

  @doc "Whether anyone listens: `:telemetry` is loaded or `Snakepit.Metrics` runs."
  @spec enabled?() :: boolean()
  def enabled?, do: telemetry?() or :persistent_term.get({Snakepit.Metrics, :on}, false)

  # Whether :telemetry is there, asked once (loading it if it is on the code path).
  defp telemetry? do
    case :persistent_term.get(@key, nil) do
      nil ->
        loaded = Code.ensure_loaded?(:telemetry) and function_exported?(:telemetry, :execute, 3)
        :persistent_term.put(@key, loaded)
        loaded

      loaded ->
        loaded
    end
  end
end
