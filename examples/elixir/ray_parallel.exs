# Parallel data processing on Ray from Elixir: submit one task per shard
# through the bundled Ray proxy and print each result as it completes.
#
#     cd elixir_harness && mix run ../examples/elixir/ray_parallel.exs
#
# The tasks are in examples/ray_parallel.py; the proxy starts a private Ray.

Logger.configure(level: :warning)

tasks = Path.expand("../ray_parallel.py", __DIR__)

# The proxy connects to Ray before it says :ready (docs/ray.md): the pool is
# ready once Ray is up.
{us, :ok} =
  :timer.tc(fn ->
    {:ok, _} =
      Snakepit.Pool.start_link(
        name: :ray,
        target: "snakepit_py.ray_proxy",
        size: 1,
        start_timeout: 60_000,
        worker_args: ["--ray-address", "local", "--num-cpus", "2", "--tasks", tasks]
      )

    Snakepit.Pool.await_ready(:ray, 120_000)
  end)

IO.puts("proxy ready, connected to a private Ray, in #{div(us, 1000)} ms")

base = "the quick brown fox jumps over the lazy dog snakepit beam python ray"
shards = for i <- 0..15, do: [i, String.duplicate(base <> " ", 50 + 10 * i)]

{:ok, job} = Snakepit.call(:ray, %{method: "submit_batch", args: ["word_stats", shards]})
me = self()

{:ok, _ref} =
  Snakepit.Stream.open(:ray, %{method: "results", args: [job]}, fn event -> send(me, event) end)

total =
  Stream.repeatedly(fn ->
    receive do
      event -> event
    after
      60_000 -> raise "no result in 60 s"
    end
  end)
  |> Enum.reduce_while(0, fn
    {:data, %{"index" => i, "result" => r}}, acc ->
      IO.puts("  shard #{String.pad_leading(to_string(i), 2)}: #{r["words"]} words")
      {:cont, acc + r["words"]}

    {:end, summary}, acc ->
      IO.puts("#{summary["status"]} in #{summary["elapsed_ms"]} ms")
      {:halt, acc}

    {:error, error}, _acc ->
      raise error
  end)

IO.puts("#{total} words")
Snakepit.Pool.stop(:ray)
