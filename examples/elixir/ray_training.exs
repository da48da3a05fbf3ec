# A small training job on Ray from Elixir: a parameter-server actor holds the
# model, a generator task trains it and streams one report per epoch.
#
#     cd elixir_harness && mix run ../examples/elixir/ray_training.exs
#
# The Python side is examples/ray_training.py.

Logger.configure(level: :warning)

tasks = Path.expand("../ray_training.py", __DIR__)

{:ok, _} =
  Snakepit.Pool.start_link(
    name: :ray,
    target: "snakepit_py.ray_proxy",
    size: 1,
    start_timeout: 60_000,
    worker_args: ["--ray-address", "local", "--num-cpus", "2", "--tasks", tasks]
  )

{:ok, _} = Snakepit.call(:ray, %{method: "connect"}, timeout: 120_000)

{:ok, actor} =
  Snakepit.call(:ray, %{
    method: "create_actor",
    args: ["ParameterServer", [], %{"lr" => 0.3}],
    kwargs: %{name: "ps-elixir"}
  })

IO.puts("parameter server #{actor}")

{:ok, job} =
  Snakepit.call(:ray, %{
    method: "submit",
    args: ["train", ["ps-elixir"]],
    kwargs: %{kwargs: %{"epochs" => 15}}
  })

me = self()
{:ok, _} = Snakepit.Stream.open(:ray, %{method: "results", args: [job]}, &send(me, &1))

Stream.repeatedly(fn ->
  receive do
    event -> event
  after
    60_000 -> raise "no progress in 60 s"
  end
end)
|> Enum.reduce_while(nil, fn
  {:data, %{"item" => p}}, _ ->
    IO.puts("  epoch #{p["epoch"]}  loss #{p["loss"]}  w=#{p["w"]}  b=#{p["b"]}")
    {:cont, nil}

  {:end, summary}, _ ->
    {:halt, summary}

  {:error, error}, _ ->
    raise error
end)

{:ok, weights} = Snakepit.call(:ray, %{method: "call_actor", args: [actor, "weights"]})
IO.puts("final model: #{inspect(weights)}")
{:ok, true} = Snakepit.call(:ray, %{method: "kill_actor", args: [actor]})
Snakepit.Pool.stop(:ray)
