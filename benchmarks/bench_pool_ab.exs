# Same-run A/B of Snakepit.Pool's routing against an older commit's pool:
# the old pool.ex and pool/queue.ex are read from git (`BASE`, default
# ee21dc2, the pool before issue 16), compiled under other module names
# (OldPool.Pool, OldPool.Queue) into this same VM, and both pools of 1 of
# the same fixture worker are timed in alternating rounds (the order turns
# every round) with Snakepit.Worker.call as a reference: 2000 small calls,
# add(a: int, b: int), per subject per round. Prints per-round ratios
# new / old (min / median / max) and the pool server's reductions per call
# (deterministic up to garbage collection).
#
#     cd elixir_harness
#     ROUNDS=21 taskset -c 0 mix run ../benchmarks/bench_pool_ab.exs
#
# Not a test: nothing here asserts.

Logger.configure(level: :critical)

base = System.get_env("BASE", "ee21dc2")
rounds = String.to_integer(System.get_env("ROUNDS", "21"))
n = 2000

old_source = fn path ->
  {src, 0} = System.cmd("git", ["show", "#{base}:elixir_harness/lib/snakepit/#{path}"])

  src
  |> String.replace("Snakepit.Pool.Queue", "OldPool.Queue")
  |> String.replace("defmodule Snakepit.Pool do", "defmodule OldPool.Pool do")
  |> String.replace("[Snakepit.Pool, {opts, self()}", "[OldPool.Pool, {opts, self()}")
end

Code.compile_string(old_source.("pool/queue.ex"))
Code.compile_string(old_source.("pool.ex"))

worker = Path.expand("../elixir_harness/test/fixtures/test_worker.py", __DIR__)
{:ok, _} = OldPool.Pool.start_link(name: :ab_old, target: worker, size: 1)
{:ok, _} = Snakepit.Pool.start_link(name: :ab_new, target: worker, size: 1)
{:ok, w} = Snakepit.Worker.start_link(target: worker)
req = %{method: "add", args: [1, 2]}

time = fn f ->
  {us, _} = :timer.tc(fn -> for _ <- 1..n, do: {:ok, 3} = f.() end)
  us / n
end

subjects = [
  old: fn -> Snakepit.call(:ab_old, req) end,
  new: fn -> Snakepit.call(:ab_new, req) end,
  worker: fn -> Snakepit.Worker.call(w, req) end
]

Enum.each(subjects, fn {_, f} -> time.(f) end)

samples =
  for r <- 1..rounds do
    order = Enum.drop(subjects, rem(r, 3)) ++ Enum.take(subjects, rem(r, 3))
    Map.new(order, fn {k, f} -> {k, time.(f)} end)
  end

med = fn l -> Enum.at(Enum.sort(l), div(length(l), 2)) end

spread = fn l ->
  Enum.map_join(
    [Enum.min(l), med.(l), Enum.max(l)],
    " / ",
    &:erlang.float_to_binary(&1, decimals: 3)
  )
end

IO.puts(
  "bench_pool_ab: base #{base}, #{rounds} rounds of #{n} calls, OTP #{System.otp_release()}"
)

for k <- [:old, :new, :worker],
    do: IO.puts("  #{k}: median #{Float.round(med.(Enum.map(samples, & &1[k])), 1)} us/call")

IO.puts(
  "  new / old per round (min / median / max): " <> spread.(Enum.map(samples, &(&1.new / &1.old)))
)

IO.puts("  old / Worker.call: " <> spread.(Enum.map(samples, &(&1.old / &1.worker))))
IO.puts("  new / Worker.call: " <> spread.(Enum.map(samples, &(&1.new / &1.worker))))

reds = fn name ->
  pid = Process.whereis(name)
  {:reductions, r0} = Process.info(pid, :reductions)
  for _ <- 1..n, do: {:ok, 3} = Snakepit.call(name, req)
  {:reductions, r1} = Process.info(pid, :reductions)
  Float.round((r1 - r0) / n, 1)
end

IO.puts("  pool server reductions per call: old #{reds.(:ab_old)}, new #{reds.(:ab_new)}")
