# Snakepit.Pool against its floor: how many calls two workers answer for 8
# concurrent callers when a worker may take more than one call at a time, and
# how soon a pool of 4 answers its first call.
#
#     cd elixir_harness
#     mix run ../benchmarks/bench_pool.exs throughput       # 2 workers on both cores
#     taskset -c 0 mix run ../benchmarks/bench_pool.exs start
#     mix run ../benchmarks/bench_pool.exs all --rounds 9 --seconds 1
#
# throughput: in each round, one after the other (the order turns every
# round), for `--seconds` each:
#   raw      two raw echo processes (benchmarks/raw_echo.py), each fed by one
#            driver keeping up to 4 frames in flight: the pipelined floor
#   threads2 a pool of 2, `threads: 2`, 8 callers, a sync `echo`
#   async    a pool of 2, `--threads 1`, 8 callers, an async method (`nap(0)`)
#   pipeline a pool of 2, `--threads 1`, `pipeline: 3`, 8 callers, a sync
#            `echo`: up to 4 calls in flight per worker, as the floor has
#   threads1 a pool of 2, `--threads 1`, 8 callers, a sync `echo`: one call
#            per worker at a time, what the pool gave every method before
# The frames to the raw echo are the envelope the harness sends, encoded and
# their echo decoded on the BEAM as the harness does. Ratios are paired: each
# pool's figure over the floor's in the same round; min / median / max over
# the rounds (a warm-up round is left out).
#
# start: a pool of 4 (the stdlib-only getting-started worker) from
# `Snakepit.Pool.start_link/1` to its first answer, median of `--starts`;
# against the floor: 4 raw echo processes opened at once, until each has
# echoed one frame; and, to tell the pool's share from Python's, 4 bare Ports
# to the same snakepit worker opened at once, until each has answered a call.
# load: an elastic pool (min_size 1, max_size 4, scale_up_wait 50 ms) under
# an open-loop arrival of 20 ms calls: `--rate` calls/s (default 40, 80% of
# one worker) for 5 s, then 4x that for 20 s, then the base rate for 10 s.
# Per second: arrivals, answers, the pool's target size, and the p50 / p99
# time a call spent beyond its 20 ms of work (queue wait, mostly); then when
# each scale-up happened after the step, and how long after the step the p99
# came back under 2x the base rate's (seconds 1-4; or 5 ms), and the size
# after the step down (scale_down_idle 3 s).
#
# hotmodel: every call asks for the same model (`affinity: "hot"`), 8
# callers, a pool of 4 whose fixture holds models in a ModelCache; each call
# uses the model for 10 ms. Without spill (`affinity_wait: :infinity`, the
# default) every call waits for the one worker holding it; with
# `affinity_wait: 20` a waiting call spills to another worker, which loads
# the model (50 ms) and holds it from then on. Alternating rounds of
# `--seconds` each; calls/s and the paired ratio spill / pinned.
#
#     mix run ../benchmarks/bench_pool.exs load
#     mix run ../benchmarks/bench_pool.exs hotmodel --rounds 7 --seconds 2
#
# Not a test: nothing here asserts.

Logger.configure(level: :critical)
Code.require_file("bench_support.exs", __DIR__)

defmodule BenchPool do
  import BenchSupport.Stats

  @echo_py Path.expand("raw_echo.py", __DIR__)
  @worker_py Path.expand("bench_worker.py", __DIR__)
  # sleep(seconds) and predict(model, seconds) with a ModelCache (max 2 models)
  @pool_py Path.expand("../elixir_harness/test/fixtures/pool_worker.py", __DIR__)
  @start_py Path.expand("../examples/hello_worker.py", __DIR__)
  @callers 8
  @depth 4

  def main(argv) do
    {opts, parts, _} =
      OptionParser.parse(argv,
        strict: [rounds: :integer, seconds: :float, starts: :integer, rate: :integer]
      )

    parts = if parts in [[], ["all"]], do: ["throughput", "start"], else: parts
    python = Snakepit.OSProcess.python()

    IO.puts("bench_pool: OTP #{System.otp_release()}, Elixir #{System.version()}, #{python}")

    IO.puts(
      "CPUs allowed: #{cpus_allowed()}, schedulers online: #{System.schedulers_online()}, " <>
        "load average: #{loadavg()}\n"
    )

    for part <- parts do
      case part do
        "throughput" ->
          throughput(python, Keyword.get(opts, :rounds, 9), Keyword.get(opts, :seconds, 1.0))

        "start" ->
          start(python, Keyword.get(opts, :starts, 10))

        "load" ->
          load_step(python, Keyword.get(opts, :rate, 40))

        "hotmodel" ->
          hot_model(python, Keyword.get(opts, :rounds, 7), Keyword.get(opts, :seconds, 2.0))

        other ->
          raise ArgumentError,
                "unknown part #{inspect(other)}, expected throughput|start|load|hotmodel|all"
      end
    end
  end

  # ------------------------------------------------------------ throughput

  def throughput(python, rounds, seconds) do
    raws = for _ <- 1..2, do: start_raw_driver(python)

    pools = [
      threads2: {pool(python, :bp_threads2, threads: 2), "echo", [1]},
      async: {pool(python, :bp_async, threads: 1), "nap", [0]},
      pipeline: {pool(python, :bp_pipeline, [threads: 1], pipeline: 3), "echo", [1]},
      threads1: {pool(python, :bp_threads1, threads: 1), "echo", [1]}
    ]

    contestants =
      [{:raw, fn -> run_raw(raws, seconds) end}] ++
        for {label, {name, method, args}} <- pools do
          {label, fn -> run_pool(name, %{method: method, args: args}, seconds) end}
        end

    IO.puts(
      "throughput: 2 workers, #{@callers} callers, #{seconds} s per measurement, " <>
        "#{rounds} rounds (+1 warm-up); raw: 2 echo processes, #{@depth} frames in flight each"
    )

    # warm-up, then rounds; the order turns every round
    Enum.each(contestants, fn {_, fun} -> fun.() end)

    samples =
      for r <- 1..rounds do
        n = rem(r, length(contestants))
        order = Enum.drop(contestants, n) ++ Enum.take(contestants, n)
        Map.new(order, fn {label, fun} -> {label, fun.()} end)
      end

    raw = Enum.map(samples, & &1.raw)
    IO.puts("  raw floor: #{summary(raw)}")

    for {label, _} <- pools do
      mine = Enum.map(samples, & &1[label])
      tput = for {m, r} <- Enum.zip(mine, raw), do: m.tput / r.tput
      p99 = for {m, r} <- Enum.zip(mine, raw), do: m.p99 / r.p99
      IO.puts("  #{String.pad_trailing(to_string(label), 9)} #{summary(mine)}")

      IO.puts(
        "            vs raw, per round: throughput #{ratios(tput)}, p99 #{ratios(p99)} (min / median / max)"
      )
    end

    for {_, {name, _, _}} <- pools, do: Snakepit.Pool.stop(name)
    Enum.each(raws, &send(&1, :stop))
    IO.puts("")
  end

  defp pool(python, name, worker_opts, pool_opts \\ []) do
    {:ok, _} =
      Snakepit.Pool.start_link(
        [name: name, target: @worker_py, size: 2, python: python, worker_opts: worker_opts] ++
          pool_opts
      )

    # until both workers' catalogues are in, each takes one call at a time
    wait_capacity(name)
    name
  end

  defp wait_capacity(name) do
    unless Enum.all?(Snakepit.Pool.stats(name).worker_details, &(&1.max_inflight > 1)) do
      Process.sleep(5)
      wait_capacity(name)
    end
  end

  defp summary(samples) do
    tput = median(Enum.map(samples, & &1.tput))
    p50 = median(Enum.map(samples, & &1.p50))
    p99 = median(Enum.map(samples, & &1.p99))
    "#{round(tput)} calls/s, p50 #{round(p50)} us, p99 #{round(p99)} us (medians over the rounds)"
  end

  defp ratios(list) do
    {lo, mid, hi} = spread(list)
    "#{fmt(lo)} / #{fmt(mid)} / #{fmt(hi)}x"
  end

  # `@callers` processes call the pool in a closed loop until the time is up.
  defp run_pool(pool, request, seconds) do
    t0 = System.monotonic_time(:microsecond)
    stop_at = t0 + round(seconds * 1_000_000)

    lat =
      1..@callers
      |> Enum.map(fn _ -> Task.async(fn -> drive_pool(pool, request, stop_at, []) end) end)
      |> Task.await_many(:infinity)
      |> Enum.concat()

    result(lat, System.monotonic_time(:microsecond) - t0)
  end

  defp drive_pool(pool, request, stop_at, acc) do
    t0 = System.monotonic_time(:microsecond)

    if t0 >= stop_at do
      acc
    else
      {:ok, _} = Snakepit.call(pool, request)
      drive_pool(pool, request, stop_at, [System.monotonic_time(:microsecond) - t0 | acc])
    end
  end

  defp result(lat, elapsed_us) do
    %{
      tput: length(lat) / (elapsed_us / 1_000_000),
      p50: percentile(lat, 50),
      p99: percentile(lat, 99)
    }
  end

  # One process per raw echo, owning its Port for the whole run.
  defp start_raw_driver(python) do
    spawn_link(fn -> raw_loop(open_raw(python)) end)
  end

  defp raw_loop(port) do
    receive do
      {:run, from, stop_at} ->
        send(from, {self(), drive_raw(port, stop_at)})
        raw_loop(port)

      :stop ->
        Port.close(port)
    end
  end

  defp run_raw(drivers, seconds) do
    t0 = System.monotonic_time(:microsecond)
    stop_at = t0 + round(seconds * 1_000_000)
    for d <- drivers, do: send(d, {:run, self(), stop_at})
    lat = Enum.flat_map(drivers, fn d -> receive(do: ({^d, lat} -> lat)) end)
    result(lat, System.monotonic_time(:microsecond) - t0)
  end

  # Up to @depth frames in flight; the echo answers in order, so the oldest
  # send time is the one a reply belongs to.
  defp drive_raw(port, stop_at) do
    sent =
      Enum.reduce(1..@depth, :queue.new(), fn id, q -> :queue.in(send_frame(port, id), q) end)

    raw_replies(port, stop_at, sent, @depth, [])
  end

  defp raw_replies(port, stop_at, sent, id, acc) do
    if :queue.is_empty(sent) do
      acc
    else
      receive do
        {^port, {:data, bin}} ->
          {:call, _, _, _, _, _} = :erlang.binary_to_term(bin, [:safe])
          now = System.monotonic_time(:microsecond)
          {{:value, t}, sent} = :queue.out(sent)
          sent = if now < stop_at, do: :queue.in(send_frame(port, id + 1), sent), else: sent
          raw_replies(port, stop_at, sent, id + 1, [now - t | acc])
      end
    end
  end

  defp send_frame(port, id) do
    t = System.monotonic_time(:microsecond)
    call = {:call, id, "echo", [1], %{}, %{meta: %{}, timeout_ms: 5_000}}
    Port.command(port, :erlang.term_to_binary(call))
    t
  end

  defp open_raw(python), do: open_port(python, [@echo_py])

  defp open_port(python, args) do
    Port.open({:spawn_executable, python}, [
      :binary,
      {:packet, 4},
      :exit_status,
      :nouse_stdio,
      args: args
    ])
  end

  defp unzip3(triples) do
    {Enum.map(triples, &elem(&1, 0)), Enum.map(triples, &elem(&1, 1)),
     Enum.map(triples, &elem(&1, 2))}
  end

  # ------------------------------------------------------------ start

  def start(python, n) do
    IO.puts("start: a pool of 4 from start_link to its first answer, median of #{n}")
    # one of each first, unmeasured (file caches)
    pool_first_answer(python, 0)
    raw4_first_answers(python, [@echo_py])
    raw4_first_answers(python, ["-m", "snakepit_py", "worker", @start_py])

    samples =
      for i <- 1..n do
        {pool_first_answer(python, i), raw4_first_answers(python, [@echo_py]),
         raw4_first_answers(python, ["-m", "snakepit_py", "worker", @start_py])}
      end

    {pool, raw, bare} = unzip3(samples)
    samples = Enum.zip(pool, raw)
    ms = fn us -> fmt(us / 1000) end
    {lo, mid, hi} = spread(pool)
    {rlo, rmid, rhi} = spread(raw)
    IO.puts("  pool of 4, first answer   #{ms.(mid)} ms (min #{ms.(lo)}, max #{ms.(hi)})")

    IO.puts(
      "  4 raw echoes opened at once, each echoed once   #{ms.(rmid)} ms (min #{ms.(rlo)}, max #{ms.(rhi)})"
    )

    {blo, bmid, bhi} = spread(bare)

    IO.puts(
      "  4 bare Ports to the worker, each answered once  #{ms.(bmid)} ms (min #{ms.(blo)}, max #{ms.(bhi)})"
    )

    diffs = for {p, r} <- samples, do: (p - r) / 1000
    {dlo, dmid, dhi} = spread(diffs)

    IO.puts(
      "  pool minus floor, per round: #{fmt(dlo)} / #{fmt(dmid)} / #{fmt(dhi)} ms (min / median / max)\n"
    )
  end

  defp pool_first_answer(python, i) do
    name = :"bp_start_#{i}"
    t0 = System.monotonic_time(:microsecond)
    {:ok, _} = Snakepit.Pool.start_link(name: name, target: @start_py, size: 4, python: python)
    {:ok, 3} = Snakepit.call(name, %{method: "add", args: [1, 2]})
    us = System.monotonic_time(:microsecond) - t0
    os_pids = for w <- Snakepit.Pool.stats(name).worker_details, do: w.os_pid
    Snakepit.Pool.stop(name)
    # the next start must not share the CPU with these exits
    Enum.each(os_pids, &Snakepit.OSProcess.await_exit(&1, 2_000))
    us
  end

  # 4 Ports opened at once; each sent one call (after its :ready, for a
  # worker: a raw echo has none); until all have answered.
  defp raw4_first_answers(python, args) do
    call = :erlang.term_to_binary({:call, 1, "add", [1, 2], %{}, %{meta: %{}}})
    worker? = args != [@echo_py]
    t0 = System.monotonic_time(:microsecond)
    ports = for _ <- 1..4, do: open_port(python, args)

    for port <- ports do
      if worker?, do: receive(do: ({^port, {:data, _ready}} -> :ok))
      Port.command(port, call)
    end

    for port <- ports, do: receive(do: ({^port, {:data, _answer}} -> :ok))
    us = System.monotonic_time(:microsecond) - t0

    for port <- ports do
      {:os_pid, os_pid} = Port.info(port, :os_pid)
      Port.close(port)
      Snakepit.OSProcess.await_exit(os_pid, 2_000)
    end

    us
  end

  # ------------------------------------------------------------ load step

  @work_ms 20

  def load_step(python, rate) do
    {:ok, _} =
      Snakepit.Pool.start_link(
        name: :bp_load,
        target: @pool_py,
        python: python,
        size: 1,
        min_size: 1,
        max_size: 4,
        scale_up_wait: 50,
        scale_down_idle: 3_000,
        events: self()
      )

    phases = [{5, rate}, {20, rate * 4}, {10, rate}]
    t0 = System.monotonic_time(:millisecond)
    sampler = spawn_link(fn -> sample_sizes(:bp_load, t0, []) end)
    collector = self()

    Enum.reduce(phases, t0, fn {secs, r}, start ->
      arrive(:bp_load, collector, start, start + secs * 1_000, 1_000 / r, 0)
      start + secs * 1_000
    end)

    total = Enum.reduce(phases, 0, fn {secs, r}, acc -> acc + secs * r end)
    calls = collect_calls(total, [])
    send(sampler, {:stop, self()})
    sizes = receive do: ({:sizes, s} -> s)
    events = drain_events([])
    Snakepit.Pool.stop(:bp_load)

    IO.puts(
      "load step: #{rate} calls/s for 5 s, #{rate * 4} for 20 s, #{rate} for 10 s; " <>
        "#{@work_ms} ms calls; elastic pool 1..4, scale_up_wait 50 ms"
    )

    IO.puts("  s   sent  answered  failed  size  extra p50 ms  extra p99 ms")

    by_sec = Enum.group_by(calls, fn {sent, _, _} -> div(sent - t0, 1_000) end)

    for sec <- 0..34 do
      cs = Map.get(by_sec, sec, [])
      extra = for {_, lat, :ok} <- cs, do: lat - @work_ms
      failed = Enum.count(cs, fn {_, _, r} -> r != :ok end)
      size = sizes |> Enum.filter(fn {t, _} -> div(t, 1_000) == sec end) |> Enum.map(&elem(&1, 1))
      size = if size == [], do: "-", else: Enum.max(size)

      {p50, p99} =
        if extra == [], do: {0, 0}, else: {percentile(extra, 50), percentile(extra, 99)}

      IO.puts(
        "  #{String.pad_leading("#{sec}", 2)}  #{String.pad_leading("#{length(cs)}", 4)}  " <>
          "#{String.pad_leading("#{length(cs) - failed}", 8)}  #{String.pad_leading("#{failed}", 6)}  " <>
          "#{String.pad_leading("#{size}", 4)}  #{String.pad_leading("#{p50}", 12)}  #{String.pad_leading("#{p99}", 12)}"
      )
    end

    step_at = t0 + 5_000
    _ = events

    # when the target size first reached each size after the step, and how it
    # came down after the step down (from the samples, every 100 ms)
    ups =
      for size <- 2..4,
          found = Enum.find(sizes, fn {t, s} -> t >= 5_000 and s >= size end),
          found != nil,
          do: {size, elem(found, 0) - 5_000}

    downs =
      sizes
      |> Enum.filter(fn {t, _} -> t >= 25_000 end)
      |> Enum.dedup_by(&elem(&1, 1))
      |> Enum.map(fn {t, s} -> {t - 25_000, s} end)

    IO.puts("  after the step, size reached (size, ms after the step): #{inspect(ups)}")
    IO.puts("  after the step down (ms after it, size): #{inspect(downs)}")

    base_p99 =
      calls
      |> Enum.filter(fn {s, _, r} -> s >= t0 + 1_000 and s < step_at and r == :ok end)
      |> Enum.map(fn {_, l, _} -> l - @work_ms end)
      |> percentile(99)

    recovered =
      Enum.find(5..24, fn sec ->
        extra = for {_, lat, :ok} <- Map.get(by_sec, sec, []), do: lat - @work_ms
        extra != [] and percentile(extra, 99) <= max(2 * base_p99, 5)
      end)

    IO.puts(
      "  base p99 extra (seconds 1-4) #{base_p99} ms; p99 back under 2x base (or 5 ms) from second " <>
        "#{inspect(recovered)} (the step is at second 5)\n"
    )
  end

  # Open loop: one call every `interval` ms from `next` until `stop`, each in its own process.
  defp arrive(pool, collector, next, stop, interval, n) do
    now = System.monotonic_time(:millisecond)

    cond do
      next >= stop ->
        :ok

      now < trunc(next) ->
        Process.sleep(trunc(next) - now)
        arrive(pool, collector, next, stop, interval, n)

      true ->
        spawn(fn ->
          t = System.monotonic_time(:millisecond)
          r = Snakepit.call(pool, %{method: "sleep", args: [@work_ms / 1000]}, timeout: 30_000)
          lat = System.monotonic_time(:millisecond) - t
          send(collector, {:call, t, lat, if(match?({:ok, _}, r), do: :ok, else: r)})
        end)

        arrive(pool, collector, next + interval, stop, interval, n + 1)
    end
  end

  defp collect_calls(0, acc), do: acc

  defp collect_calls(n, acc) do
    receive do
      {:call, t, lat, r} -> collect_calls(n - 1, [{t, lat, r} | acc])
    after
      60_000 -> acc
    end
  end

  defp sample_sizes(pool, t0, acc) do
    receive do
      {:stop, from} -> send(from, {:sizes, Enum.reverse(acc)})
    after
      100 ->
        s = Snakepit.Pool.stats(pool)
        sample_sizes(pool, t0, [{System.monotonic_time(:millisecond) - t0, s.target_size} | acc])
    end
  end

  defp drain_events(acc) do
    receive do
      {:snakepit_pool, _, {:scaled, from, to, why}} ->
        drain_events([{:scaled, from, to, why, System.monotonic_time(:millisecond)} | acc])

      {:snakepit_pool, _, _} ->
        drain_events(acc)
    after
      0 -> Enum.reverse(acc)
    end
  end

  # ------------------------------------------------------------ hot model

  @hot_ms 10

  def hot_model(python, rounds, seconds) do
    env = [{"POOL_FIXTURE_LOAD_S", "0.05"}]

    pools =
      for {name, wait} <- [bp_pinned: :infinity, bp_spill: 20] do
        {:ok, _} =
          Snakepit.Pool.start_link(
            name: name,
            target: @pool_py,
            python: python,
            size: 4,
            env: env,
            affinity_wait: wait
          )

        # one worker holds the model to begin with
        {:ok, _} = Snakepit.call(name, %{method: "predict", args: ["hot"]})
        wait_models(name)
        name
      end

    request = %{method: "predict", args: ["hot", @hot_ms / 1000]}
    run = fn name -> hot_run(name, request, seconds) end
    Enum.each(pools, run)

    samples =
      for r <- 1..rounds do
        order = if rem(r, 2) == 0, do: Enum.reverse(pools), else: pools
        Map.new(order, &{&1, run.(&1)})
      end

    pinned = Enum.map(samples, & &1.bp_pinned)
    spill = Enum.map(samples, & &1.bp_spill)

    holders = fn name ->
      Enum.count(Snakepit.Pool.stats(name).worker_details, &("hot" in &1.loaded_models))
    end

    IO.puts(
      "hot model: 8 callers, one model, #{@hot_ms} ms per call, pool of 4, #{rounds} rounds of #{seconds} s"
    )

    IO.puts(
      "  pinned (affinity_wait :infinity): #{round(median(pinned))} calls/s, workers holding it: #{holders.(:bp_pinned)}"
    )

    IO.puts(
      "  spill (affinity_wait 20 ms):      #{round(median(spill))} calls/s, workers holding it: #{holders.(:bp_spill)}"
    )

    IO.puts("  spill / pinned, per round: #{ratios(Enum.zip_with(spill, pinned, &(&1 / &2)))}\n")
    Enum.each(pools, &Snakepit.Pool.stop/1)
  end

  defp wait_models(name) do
    unless Enum.any?(Snakepit.Pool.stats(name).worker_details, &("hot" in &1.loaded_models)) do
      Process.sleep(5)
      wait_models(name)
    end
  end

  defp hot_run(pool, request, seconds) do
    t0 = System.monotonic_time(:microsecond)
    stop_at = t0 + round(seconds * 1_000_000)

    n =
      1..@callers
      |> Enum.map(fn _ -> Task.async(fn -> hot_drive(pool, request, stop_at, 0) end) end)
      |> Task.await_many(:infinity)
      |> Enum.sum()

    n / ((System.monotonic_time(:microsecond) - t0) / 1_000_000)
  end

  defp hot_drive(pool, request, stop_at, n) do
    if System.monotonic_time(:microsecond) >= stop_at do
      n
    else
      {:ok, _} = Snakepit.call(pool, request, affinity: "hot", timeout: 30_000)
      hot_drive(pool, request, stop_at, n + 1)
    end
  end

  defp loadavg do
    case File.read("/proc/loadavg") do
      {:ok, s} -> s |> String.split() |> Enum.take(3) |> Enum.join(" ")
      _ -> "?"
    end
  end
end

BenchPool.main(System.argv())
