# The Elixir half of tests/test_observability.py: a pool on tests/workers/observed.py
# (OpenTelemetry SDK, in-memory exporter), Snakepit.Metrics on a free port, known
# calls; prints what the Python side checks, then waits for a line on stdin so
# the endpoint can be scraped over HTTP.
worker = Path.expand("../workers/observed.py", __DIR__)

{:ok, _} =
  Snakepit.Pool.start_link(name: :obs, target: worker, size: 1, env: [{"OBSERVED_OTEL", "1"}])

{:ok, _} = Snakepit.Metrics.start_link(port: 0)
tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
for _ <- 1..5, do: {:ok, 3} = Snakepit.call(:obs, %{method: "add", args: [1, 2]})
for _ <- 1..2, do: {:error, _} = Snakepit.call(:obs, %{method: "boom"})
{:ok, 30} = Snakepit.call(:obs, %{method: "sleep_ms", args: [30]})

{:ok, %{"traceparent" => child}} =
  Snakepit.call(:obs, %{method: "traced", args: ["x"]}, traceparent: tp)

{:ok, spans} = Snakepit.call(:obs, %{method: "finished_spans"})
[w] = Snakepit.Pool.workers(:obs)
{:ok, _} = Snakepit.Worker.health_check(w)
IO.puts("PORT #{Snakepit.Metrics.port()}")
IO.puts("CHILD #{child}")

for s <- spans,
    do: IO.puts("SPAN #{s["name"]} #{s["kind"]} #{s["trace_id"]} #{s["span_id"]} #{s["parent_span_id"]}")

IO.puts("READY")
IO.read(:stdio, :line)
