# Ray proxy from the BEAM, side by side with benchmarks/bench_ray.py.
#
#     cd elixir_harness && mix run ../benchmarks/bench_ray_beam.exs
#
# 1. 1 000 trivial tasks: Ray directly from Python and through the proxy from
#    Python (bench_ray.py, run first in the same run), then through the proxy
#    from here.
# 2. The same batch of light (µs) and heavy (~50 ms CPU) work through a plain
#    pool of 2 Python workers vs through the Ray proxy (a private Ray with 2 CPUs).
# Figures are medians of 5 runs after a warm-up.

Logger.configure(level: :warning)

here = Path.expand(".", __DIR__)
tasks = Path.join(here, "ray_bench_tasks.py")
python = Snakepit.OSProcess.python()

median = fn fun, n ->
  fun.()
  times = for _ <- 1..n, do: elem(:timer.tc(fun), 0)
  Enum.at(Enum.sort(times), div(n, 2)) / 1_000_000
end

fmt = fn secs -> :io_lib.format("~7.3f s", [secs]) |> to_string() end

IO.puts("running bench_ray.py (Ray directly and through the proxy, from Python) ...")
{out, 0} = System.cmd(python, [Path.join(here, "bench_ray.py"), "--kv"])

py =
  for line <- String.split(out, "\n"),
      [k, v] <- [String.split(line, "=", parts: 2)],
      match?({_, ""}, Float.parse(v)),
      into: %{},
      do: {k, elem(Float.parse(v), 0)}

start_ray = fn ->
  {:ok, _} =
    Snakepit.Pool.start_link(
      name: :ray,
      target: "snakepit_py.ray_proxy",
      size: 1,
      start_timeout: 60_000,
      worker_args: ["--ray-address", "local", "--num-cpus", "2", "--tasks", tasks]
    )

  {:ok, _} = Snakepit.call(:ray, %{method: "connect"}, timeout: 120_000)
end

start_ray.()

ray_job = fn task, n ->
  {:ok, %{"status" => "complete"}} =
    Snakepit.call(:ray, %{method: "submit_ray_job", args: [task, [1], n]}, timeout: 300_000)
end

beam_batch = median.(fn -> ray_job.("noop", 1000) end, 5)
beam_one = median.(fn -> ray_job.("noop", 1) end, 50)
direct = py["direct.batch_s"]

IO.puts("\n1 000 trivial tasks                         batch    vs direct   one round trip")

for {label, batch, one} <- [
      {"Ray directly, from Python        ", direct, py["direct.round_trip_ms"]},
      {"proxy, from Python (blocking)    ", py["proxy.batch_s"], py["proxy.round_trip_ms"]},
      {"proxy, from Python (streamed)    ", py["proxy.batch_streamed_s"], nil},
      {"proxy, from the BEAM (blocking)  ", beam_batch, beam_one * 1000}
    ] do
  ratio = :io_lib.format("~.2fx", [batch / direct])
  rt = if one, do: :io_lib.format("~.2f ms", [one]), else: ""
  IO.puts("  #{label}#{fmt.(batch)}    #{ratio}      #{rt}")
end

Snakepit.Pool.stop(:ray)

# --- plain pool of 2 vs Ray proxy, light and heavy work ------------------------------------

batches = [{"light", 1000}, {"heavy", 40}]

{:ok, _} = Snakepit.Pool.start_link(name: :plain, target: tasks, size: 2)

pool_batch = fn method, n ->
  1..n
  |> Task.async_stream(
    fn i -> {:ok, _} = Snakepit.call(:plain, %{method: method, args: [i]}, timeout: 60_000) end,
    max_concurrency: 4,
    timeout: 120_000
  )
  |> Stream.run()
end

pool_times = for {m, n} <- batches, into: %{}, do: {m, median.(fn -> pool_batch.(m, n) end, 5)}
Snakepit.Pool.stop(:plain)

start_ray.()
ray_times = for {m, n} <- batches, into: %{}, do: {m, median.(fn -> ray_job.(m, n) end, 5)}
Snakepit.Pool.stop(:ray)

IO.puts(
  "\nfrom the BEAM, same batch          pool of 2 workers   Ray proxy (2 CPUs)   Ray / pool"
)

for {m, n} <- batches do
  label = String.pad_trailing("#{n} x #{m}", 34)
  ratio = :io_lib.format("~.2fx", [ray_times[m] / pool_times[m]])
  IO.puts("  #{label}#{fmt.(pool_times[m])}          #{fmt.(ray_times[m])}          #{ratio}")
end
