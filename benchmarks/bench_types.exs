# A 1 MiB float32 numpy array returned to the BEAM (a %Snakepit.Tensor{}) against
# a 1 MiB binary echoed, through one real worker, in alternating rounds.
#
#   cd elixir_harness && mix run ../benchmarks/bench_types.exs [rounds] [calls_per_round]
#
# Each round times `calls` echoes and `calls` array calls (which goes first
# alternates) and reports the paired ratio array / echo; min/median/max over
# the rounds. The echo carries 1 MiB each way, the array call 1 MiB back only;
# "binary returned" is the same 1 MiB as a bytes result (the C encoder's road),
# the closest like-for-like baseline for the array.

Code.require_file("bench_support.exs", __DIR__)
alias BenchSupport.Stats
alias Snakepit.Worker

[rounds, calls] =
  case System.argv() do
    [r, c] -> [String.to_integer(r), String.to_integer(c)]
    [r] -> [String.to_integer(r), 200]
    [] -> [9, 200]
  end

{:ok, w} = Worker.start_link(target: Path.expand("types_worker.py", __DIR__), worker_id: "bench")
payload = :crypto.strong_rand_bytes(1_048_576)

time = fn method, args ->
  # warm: the first call of a method builds its fast paths
  {:ok, _} = Worker.call(w, %{method: method, args: args})
  t0 = System.monotonic_time(:nanosecond)

  for _ <- 1..calls do
    {:ok, result} = Worker.call(w, %{method: method, args: args})
    result
  end

  (System.monotonic_time(:nanosecond) - t0) / calls / 1000
end

{:ok, %Snakepit.Tensor{type: {:f, 32}, shape: {262_144}, data: data}} =
  Worker.call(w, %{method: "array"})

^data = for(i <- 0..262_143, into: <<>>, do: <<i / 262_143::float-little-32>>)

rows =
  for round <- 1..rounds do
    pair = [{"echo", [payload]}, {"array", []}, {"array_copy", []}, {"blob", []}]
    pair = if rem(round, 2) == 0, do: Enum.reverse(pair), else: pair
    us = Map.new(pair, fn {m, args} -> {m, time.(m, args)} end)
    {us["echo"], us["array"], us["array_copy"], us["blob"]}
  end

IO.puts(
  "bench_types: #{rounds} rounds x #{calls} calls, CPUs #{Stats.cpus_allowed()}, " <>
    "OTP #{System.otp_release()}, Elixir #{System.version()}"
)

for {label, i} <- [
      {"1 MiB binary echo", 0},
      {"1 MiB binary returned", 3},
      {"1 MiB float32 array", 1},
      {"  (new array each call)", 2}
    ] do
  {lo, med, hi} = Stats.spread(Enum.map(rows, &elem(&1, i)))

  IO.puts(
    "  #{String.pad_trailing(label, 26)} µs/call min #{Stats.fmt(lo)}  median #{Stats.fmt(med)}  max #{Stats.fmt(hi)}"
  )
end

for {label, i, base} <- [
      {"array / echo", 1, 0},
      {"new array / echo", 2, 0},
      {"array / binary returned", 1, 3}
    ] do
  {lo, med, hi} = Stats.spread(Enum.map(rows, &(elem(&1, i) / elem(&1, base))))

  IO.puts(
    "  #{String.pad_trailing(label, 26)} paired ratio min #{Stats.fmt(lo)}  median #{Stats.fmt(med)}  max #{Stats.fmt(hi)}"
  )
end

Worker.stop(w)
