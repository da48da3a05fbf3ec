defmodule :telemetry do
  @moduledoc false
  # A stand-in for the :telemetry library's execute/3, compiled in the test
  # environment only (test/support): hex is unreachable here, so the real
  # library is not exercised. Every event goes to the pids in the
  # :snakepit_test_telemetry application env as {:telemetry, event, m, meta}.

  def execute(event, measurements, metadata) do
    for pid <- Application.get_env(:snakepit, :test_telemetry, []),
        do: send(pid, {:telemetry, event, measurements, metadata})

    :ok
  end
end
