defmodule Snakepit.TelemetryTest do
  # Events through a stand-in :telemetry (test/support/telemetry_stub.ex) and the
  # Prometheus endpoint scraped over HTTP. The real :telemetry library is not
  # exercised here (hex is unreachable); tests/test_observability.py parses the
  # scrape with prometheus_client and checks traces across the bridge.
  use ExUnit.Case, async: false

  @worker Path.expand("../../../tests/workers/observed.py", __DIR__)

  setup do
    Application.put_env(:snakepit, :test_telemetry, [self()])
    on_exit(fn -> Application.delete_env(:snakepit, :test_telemetry) end)
    :ok
  end

  describe "call events" do
    test ":start and :stop carry durations, the outcome and the traceparent" do
      {:ok, _} = Snakepit.Pool.start_link(name: :tele_pool, target: @worker, size: 1)
      on_exit(fn -> quietly(fn -> Snakepit.Pool.stop(:tele_pool) end) end)
      tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

      assert {:ok, 3} = Snakepit.call(:tele_pool, %{method: "add", args: [1, 2]}, traceparent: tp)

      assert_receive {:telemetry, [:snakepit, :call, :start], %{monotonic_time: _},
                      %{pool: :tele_pool, method: "add", traceparent: ^tp}}

      assert_receive {:telemetry, [:snakepit, :call, :stop], %{duration: d, queue_time: q},
                      %{outcome: :ok, method: "add"}}

      assert d > 0 and q >= 0

      assert {:error, %Snakepit.Error{kind: :exception}} =
               Snakepit.call(:tele_pool, %{method: "boom"})

      assert_receive {:telemetry, [:snakepit, :call, :stop], _, %{outcome: :exception}}
    end

    test "snakepit.publish: a [:snakepit, :worker, :event] with its name and data" do
      {:ok, w} = Snakepit.Worker.start_link(target: @worker, worker_id: "pub")
      on_exit(fn -> quietly(fn -> Snakepit.Worker.stop(w) end) end)

      assert {:ok, nil} =
               Snakepit.Worker.call(w, %{method: "announce", args: ["progress", %{"done" => 3}]})

      assert_receive {:telemetry, [:snakepit, :worker, :event], %{system_time: _},
                      %{worker: ^w, worker_id: "pub", name: "progress", data: %{"done" => 3}}}

      refute_received {:telemetry, [:snakepit, :worker, :event], _, %{name: "loaded_models"}}
    end

    test "a worker's crash: :exception for its calls, :crashed, :restarted, :ready" do
      {:ok, w} = Snakepit.Worker.start_link(target: @worker)
      assert_receive {:telemetry, [:snakepit, :worker, :ready], %{startup_time: _}, _}
      %{os_pid: pid} = Snakepit.Worker.info(w)
      task = Task.async(fn -> Snakepit.Worker.call(w, %{method: "sleep_ms", args: [5_000]}) end)
      assert_receive {:telemetry, [:snakepit, :call, :start], _, %{method: "sleep_ms"}}
      System.cmd("kill", ["-9", to_string(pid)])
      assert {:error, %Snakepit.Error{kind: :worker_crashed}} = Task.await(task)

      assert_receive {:telemetry, [:snakepit, :call, :exception], %{duration: _},
                      %{kind: :error, outcome: :worker_crashed}}

      assert_receive {:telemetry, [:snakepit, :worker, :crashed], %{inflight: 1},
                      %{reason: :worker_crashed}}

      assert_receive {:telemetry, [:snakepit, :worker, :restarted], %{restarts: 1},
                      %{reason: :worker_crashed}},
                     5_000

      assert_receive {:telemetry, [:snakepit, :worker, :ready], _, %{restarts: 1}}, 10_000
      Snakepit.Worker.stop(w)
    end

    test "models changed" do
      {:ok, w} = Snakepit.Worker.start_link(target: @worker)
      assert {:ok, 2} = Snakepit.Worker.call(w, %{method: "loaded", args: [["a", "b"], 0.01]})

      assert_receive {:telemetry, [:snakepit, :models, :changed], %{count: 2},
                      %{models: ["a", "b"]}}

      Snakepit.Worker.stop(w)
    end
  end

  describe "Snakepit.Metrics" do
    test "serves pool and worker metrics over HTTP" do
      {:ok, _} = Snakepit.Pool.start_link(name: :metrics_pool, target: @worker, size: 1)
      on_exit(fn -> quietly(fn -> Snakepit.Pool.stop(:metrics_pool) end) end)
      {:ok, m} = Snakepit.Metrics.start_link(port: 0)
      on_exit(fn -> quietly(fn -> GenServer.stop(m) end) end)

      for _ <- 1..3, do: {:ok, _} = Snakepit.call(:metrics_pool, %{method: "add", args: [1, 2]})
      [w] = Snakepit.Pool.workers(:metrics_pool)
      {:ok, _} = Snakepit.Worker.health_check(w)

      url = ~c"http://127.0.0.1:#{Snakepit.Metrics.port()}/metrics"
      {:ok, {{_, 200, _}, headers, body}} = :httpc.request(:get, {url, []}, [], [])
      body = to_string(body)
      assert to_string(:proplists.get_value(~c"content-type", headers)) =~ "text/plain"
      assert body =~ ~s(snakepit_pool_queue_depth{pool="metrics_pool"} 0)
      assert body =~ ~s(snakepit_pool_workers{pool="metrics_pool",state="idle"} 1)
      assert body =~ ~s(snakepit_calls_total{pool="metrics_pool",method="add",outcome="ok"} 3)

      assert body =~
               ~s(snakepit_pool_call_duration_seconds_count{pool="metrics_pool",method="add",outcome="ok"} 3)

      {:ok, {{_, 404, _}, _, _}} =
        :httpc.request(:get, {~c"http://127.0.0.1:#{Snakepit.Metrics.port()}/x", []}, [], [])
    end
  end

  # Stops what a test started, if it is still running (a linked one may be gone).
  defp quietly(stop) do
    stop.()
  catch
    :exit, _ -> :ok
  end
end
