# BEAM-side benchmark of the harness against a raw Python packet-4 echo
# (benchmarks/raw_echo.py) over the same kind of Port, alternating in one run.
#
#     cd elixir_harness
#     taskset -c 0 mix run ../benchmarks/bench_beam.exs latency     # pinned: round trips, start, restart
#     mix run ../benchmarks/bench_beam.exs throughput               # 2 workers on 2 cores
#     mix run ../benchmarks/bench_beam.exs all --json               # everything, JSON on the last line
#
# Latency figures are per-round ratios, harness / raw echo measured in the
# same round (rounds alternate the subjects), given as min / median / max over
# the rounds; absolute times are medians. The small call is what users run: an
# annotated `add(a: int, b: int)` in a real envelope. Not a test: nothing here
# asserts.

Logger.configure(level: :critical)
Code.require_file("bench_support.exs", __DIR__)

defmodule Bench do
  @echo_py Path.expand("raw_echo.py", __DIR__)
  @worker_py Path.expand("../elixir_harness/test/fixtures/test_worker.py", __DIR__)
  # Start-up is timed with the getting-started worker (what bench_port.py uses too):
  # the test fixture imports logging and more that a start-up figure should not carry.
  @start_py Path.expand("../examples/hello_worker.py", __DIR__)
  @rounds 7

  def main(argv) do
    {parts, json?} = {Enum.reject(argv, &(&1 == "--json")), "--json" in argv}
    parts = if parts in [[], ["all"]], do: ["latency", "throughput"], else: parts
    python = Snakepit.OSProcess.python()

    header = %{
      python: python,
      otp: System.otp_release(),
      elixir: System.version(),
      cpus_allowed: cpus_allowed(),
      schedulers: System.schedulers_online()
    }

    IO.puts("bench_beam: OTP #{header.otp}, Elixir #{header.elixir}, #{python}")
    IO.puts("CPUs allowed: #{header.cpus_allowed}, schedulers online: #{header.schedulers}\n")

    results =
      Enum.reduce(parts, header, fn
        "latency", acc ->
          Map.merge(acc, latency(python))

        "throughput", acc ->
          Map.merge(acc, throughput(python))

        other, _ ->
          raise ArgumentError, "unknown part #{inspect(other)}, expected latency|throughput|all"
      end)

    if json?, do: IO.puts(Bench.JSON.encode(results))
  end

  # ------------------------------------------------------------ latency

  def latency(python) do
    {:ok, w} = Snakepit.Worker.start_link(target: @worker_py, python: python)
    raw = open_raw(python)
    codec = open_raw(python, ["--codec"])
    direct = open_direct(python, @worker_py)
    {:ok, ok_peer} = Snakepit.Worker.start_link(target: "-", python: ok_peer_script(python))

    {:ok, _} =
      Snakepit.Pool.start_link(name: :bench_rt, target: @worker_py, size: 1, python: python)

    small = 1
    big = :rand.bytes(1024 * 1024)

    [h_small, r_small, p_small, d_small, ok_small, c_small] =
      alternate(@rounds, [
        fn -> round_trip_harness(w, small, 2_000) end,
        fn -> round_trip_raw(raw, small, 2_000) end,
        fn -> round_trip_pool(:bench_rt, small, 2_000) end,
        fn -> round_trip_raw(direct, small, 2_000) end,
        fn -> round_trip_harness(ok_peer, small, 2_000) end,
        fn -> round_trip_raw(codec, small, 2_000) end
      ])

    IO.puts(
      "  small call round trip, add(a: int, b: int), against the raw echo (per-round ratios):"
    )

    paired("Snakepit.Worker.call", h_small, r_small, "us")
    paired("Snakepit.call (pool of 1)", p_small, r_small, "us")
    paired("bare Port to the worker", d_small, r_small, "us", "the Python runtime")
    paired("bare Port to a codec loop", c_small, r_small, "us", "the ETF codec alone")
    paired("Worker to a canned peer", ok_small, r_small, "us", "the Elixir harness")

    [h_big, r_big, d_big] =
      alternate(@rounds, [
        fn -> round_trip_harness(w, big, 20) end,
        fn -> round_trip_raw(raw, big, 20) end,
        fn -> round_trip_raw(direct, big, 20) end
      ])

    IO.puts("  1 MiB binary echo round trip, against the raw echo:")
    paired("Snakepit.Worker.call", h_big, r_big, "us")
    paired("bare Port to the worker", d_big, r_big, "us")

    Enum.each([w, ok_peer], &Snakepit.Worker.stop/1)
    Enum.each([raw, codec, direct], &Port.close/1)
    Snakepit.Pool.stop(:bench_rt)

    [h_start, r_start, d_start] =
      alternate(@rounds, [
        fn -> start_harness(python) end,
        fn -> start_raw(python) end,
        fn -> start_direct(python) end
      ])

    {h_ready, h_first} = Enum.unzip(h_start)
    {d_ready, d_first} = Enum.unzip(d_start)
    over = fn firsts -> Enum.zip_with(firsts, r_start, &((&1 - &2) / 1000)) end

    IO.puts("  start, a standard-library TARGET (ms; per-round differences, min / median / max):")
    IO.puts("    raw echo: spawn -> first reply     #{fmt(median(r_start) / 1000)} ms")

    IO.puts(
      "    Snakepit.Worker: start_link -> first reply #{fmt(median(h_first) / 1000)} ms, " <>
        "over raw #{spread(over.(h_first))} ms; :ready -> first reply " <>
        "#{spread(Enum.zip_with(h_first, h_ready, &((&1 - &2) / 1000)))} ms"
    )

    IO.puts(
      "    bare Port: spawn -> first reply    #{fmt(median(d_first) / 1000)} ms, " <>
        "over raw #{spread(over.(d_first))} ms; :ready -> first reply " <>
        "#{spread(Enum.zip_with(d_first, d_ready, &((&1 - &2) / 1000)))} ms"
    )

    pool4s = for i <- 1..10, do: pool_first_reply(python, i)
    pool4 = median(pool4s)

    IO.puts(
      "  pool of 4: start_link -> first reply #{fmt(pool4 / 1000)} ms " <>
        "(median of 10; min #{fmt(Enum.min(pool4s) / 1000)}, max #{fmt(Enum.max(pool4s) / 1000)})"
    )

    restart = restart_times(python, 8)

    IO.puts(
      "  kill -9 -> replacement ready #{fmt(median(restart) / 1000)} ms " <>
        "(median of 8, max #{fmt(Enum.max(restart) / 1000)} ms)\n"
    )

    %{
      small_rt_us: median(h_small),
      small_rt_raw_us: median(r_small),
      small_rt_ratio: ratios(h_small, r_small),
      small_rt_pool_ratio: ratios(p_small, r_small),
      small_rt_bare_worker_ratio: ratios(d_small, r_small),
      small_rt_codec_only_ratio: ratios(c_small, r_small),
      small_rt_harness_canned_peer_ratio: ratios(ok_small, r_small),
      mib_rt_us: median(h_big),
      mib_rt_raw_us: median(r_big),
      mib_rt_ratio: ratios(h_big, r_big),
      mib_rt_bare_worker_ratio: ratios(d_big, r_big),
      first_reply_ms: median(h_first) / 1000,
      raw_first_reply_ms: median(r_start) / 1000,
      first_reply_over_raw_ms: median(over.(h_first)),
      bare_first_reply_over_raw_ms: median(over.(d_first)),
      ready_to_first_reply_ms: median(Enum.zip_with(h_first, h_ready, &((&1 - &2) / 1000))),
      pool4_first_reply_ms: pool4 / 1000,
      restart_ms: median(restart) / 1000
    }
  end

  # One line: the median of `subject` and its per-round ratios to `floor`.
  defp paired(label, subject, floor, unit, note \\ nil) do
    note = if note, do: ": #{note}", else: ""

    IO.puts(
      "    #{String.pad_trailing(label, 27)} #{fmt(median(subject))} #{unit} " <>
        "(raw #{fmt(median(floor))} #{unit}), ratio #{spread(ratios(subject, floor))}#{note}"
    )
  end

  defp ratios(subject, floor), do: Enum.zip_with(subject, floor, &(&1 / &2))

  defp spread(values) do
    [Enum.min(values), median(values), Enum.max(values)]
    |> Enum.map_join(" / ", &:erlang.float_to_binary(&1 / 1, decimals: 2))
  end

  # Runs each measurement in turn, `rounds` times (after one warm-up round);
  # returns each one's samples, round by round (sample i of every list is from round i).
  defp alternate(rounds, funs) do
    Enum.each(funs, & &1.())
    samples = for _ <- 1..rounds, do: Enum.map(funs, & &1.())
    samples |> Enum.zip() |> Enum.map(&Tuple.to_list/1)
  end

  # microseconds per call
  defp round_trip_harness(w, value, n) do
    request = request(value)

    {us, _} =
      :timer.tc(fn ->
        for _ <- 1..n, do: {:ok, _} = Snakepit.Worker.call(w, request)
      end)

    us / n
  end

  defp round_trip_pool(pool, value, n) do
    request = request(value)
    {us, _} = :timer.tc(fn -> for _ <- 1..n, do: {:ok, _} = Snakepit.call(pool, request) end)
    us / n
  end

  # The envelope the harness sends (timeout_ms included), encoded and the
  # answer decoded as the harness does: bounced unchanged by the raw echo, or
  # answered by a snakepit worker on a bare Port.
  defp round_trip_raw(port, value, n) do
    {us, _} =
      :timer.tc(fn ->
        for id <- 1..n do
          %{method: method, args: args} = request(value)
          call = {:call, id, method, args, %{}, %{meta: %{}, timeout_ms: 5_000}}
          Port.command(port, :erlang.term_to_binary(call))

          receive do
            {^port, {:data, bin}} -> bin |> :erlang.binary_to_term([:safe]) |> answered!()
          end
        end
      end)

    us / n
  end

  # A small value is the annotated add's arguments; a binary is echoed.
  defp request(1), do: %{method: "add", args: [1, 2]}
  defp request(value), do: %{method: "echo", args: [value]}

  # The raw echo bounces the call back; a worker answers it. Anything else (an
  # error reply, say) would time the wrong path.
  defp answered!({:call, _, _, _, _, _} = call), do: call
  defp answered!({:ok, _id, _result} = ok), do: ok
  defp answered!(other), do: raise("unexpected reply #{inspect(other, limit: 10)}")

  defp open_direct(python, target) do
    port =
      Port.open({:spawn_executable, python}, [
        :binary,
        {:packet, 4},
        :exit_status,
        :nouse_stdio,
        args: ["-m", "snakepit_py", "worker", target]
      ])

    receive do
      {^port, {:data, _ready}} -> port
    end
  end

  # {Port.open -> :ready, Port.open -> first reply} in microseconds, on a bare Port
  defp start_direct(python) do
    t0 = System.monotonic_time(:microsecond)
    port = open_direct(python, @start_py)
    ready = System.monotonic_time(:microsecond) - t0
    call = {:call, 1, "add", [1, 2], %{}, %{meta: %{}, timeout_ms: 5_000}}
    Port.command(port, :erlang.term_to_binary(call))

    receive do
      {^port, {:data, bin}} -> {:ok, 1, 3} = :erlang.binary_to_term(bin, [:safe])
    end

    first = System.monotonic_time(:microsecond) - t0
    close_and_reap(port)
    {ready, first}
  end

  # Port.close returns before the OS process has exited; on a pinned core its
  # exit would overlap (and slow) the next start measured. Wait for it.
  defp close_and_reap(port) do
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    Port.close(port)
    Snakepit.OSProcess.await_exit(os_pid, 2_000)
  end

  # Snakepit.Worker always runs `python -m snakepit_py worker TARGET`; this
  # script ignores those arguments and runs the canned protocol peer.
  defp ok_peer_script(python) do
    path = Path.join(System.tmp_dir!(), "snakepit_bench_ok_peer.sh")
    File.write!(path, "#!/bin/sh\nexec #{python} #{@echo_py} --ok\n")
    File.chmod!(path, 0o755)
    path
  end

  defp open_raw(python, flags \\ []) do
    Port.open({:spawn_executable, python}, [
      :binary,
      {:packet, 4},
      :exit_status,
      :nouse_stdio,
      args: [@echo_py | flags]
    ])
  end

  # {start_link -> :ready, start_link -> first reply} in microseconds
  defp start_harness(python) do
    t0 = System.monotonic_time(:microsecond)
    {:ok, w} = Snakepit.Worker.start_link(target: @start_py, python: python)
    ready = System.monotonic_time(:microsecond) - t0
    {:ok, 3} = Snakepit.Worker.call(w, %{method: "add", args: [1, 2]})
    first = System.monotonic_time(:microsecond) - t0
    Snakepit.Worker.stop(w)
    {ready, first}
  end

  defp start_raw(python) do
    {us, port} =
      :timer.tc(fn ->
        port = open_raw(python)
        Port.command(port, "ping")

        receive do
          {^port, {:data, "ping"}} -> port
        end
      end)

    close_and_reap(port)
    us
  end

  # microseconds from Pool.start_link to the first call answered
  defp pool_first_reply(python, i) do
    name = :"bench_pool4_#{i}"

    {us, {:ok, 3}} =
      :timer.tc(fn ->
        {:ok, _} =
          Snakepit.Pool.start_link(name: name, target: @start_py, size: 4, python: python)

        Snakepit.call(name, %{method: "add", args: [1, 2]})
      end)

    Snakepit.Pool.stop(name)
    us
  end

  # kill -9 one worker at a time (a 0 ms restart window: every crash counts as
  # the first, so no backoff) and time until its replacement is ready.
  defp restart_times(python, n) do
    {:ok, _} =
      Snakepit.Pool.start_link(
        name: :bench_restart,
        target: @worker_py,
        size: 4,
        python: python,
        restart_window: 0
      )

    times =
      for i <- 1..n do
        %{os_pid: os_pid, worker_id: id} =
          Enum.at(Snakepit.Pool.stats(:bench_restart).worker_details, rem(i, 4))

        t0 = System.monotonic_time(:microsecond)
        Snakepit.OSProcess.signal(os_pid, "KILL")
        BenchSupport.await_replacement(:bench_restart, id, os_pid)
        System.monotonic_time(:microsecond) - t0
      end

    Snakepit.Pool.stop(:bench_restart)
    times
  end

  # ------------------------------------------------------------ throughput

  def throughput(python) do
    seconds = 3
    callers = 4

    {:ok, _} =
      Snakepit.Pool.start_link(name: :bench_tp, target: @worker_py, size: 2, python: python)

    request = %{method: "echo", args: [1]}
    _ = for _ <- 1..200, do: Snakepit.call(:bench_tp, request)

    {count, lat} = load(callers, seconds, fn -> {:ok, _} = Snakepit.call(:bench_tp, request) end)
    Snakepit.Pool.stop(:bench_tp)

    # baseline: two raw echo ports, one closed-loop driver each
    raws = for _ <- 1..2, do: open_raw(python)

    {raw_count, raw_lat} =
      load_each(raws, seconds, fn port ->
        Port.command(port, :erlang.term_to_binary({:call, 1, "echo", [1], %{}, %{meta: %{}}}))

        receive do
          {^port, {:data, bin}} -> :erlang.binary_to_term(bin, [:safe])
        end
      end)

    # the ports closed with their driver tasks

    tput = count / seconds
    raw_tput = raw_count / seconds
    {p50, p99} = {percentile(lat, 50), percentile(lat, 99)}

    IO.puts(
      "  pool of 2, #{callers} callers, #{seconds} s: #{round(tput)} calls/s, latency p50 #{fmt(p50)} us, p99 #{fmt(p99)} us"
    )

    IO.puts(
      "  raw echo, 2 ports, 1 driver each: #{round(raw_tput)} round trips/s, p50 #{fmt(percentile(raw_lat, 50))} us, " <>
        "p99 #{fmt(percentile(raw_lat, 99))} us\n"
    )

    %{
      pool2_calls_per_s: tput,
      pool2_p50_us: p50,
      pool2_p99_us: p99,
      raw2_round_trips_per_s: raw_tput,
      raw2_p99_us: percentile(raw_lat, 99)
    }
  end

  # `callers` processes call `fun` in a closed loop for `seconds`; returns
  # {calls completed, latencies in us}.
  defp load(callers, seconds, fun) do
    stop_at = System.monotonic_time(:microsecond) + seconds * 1_000_000

    1..callers
    |> Enum.map(fn _ -> Task.async(fn -> drive(stop_at, fun, []) end) end)
    |> Task.await_many(:infinity)
    |> merge()
  end

  defp load_each(ports, seconds, fun) do
    stop_at = System.monotonic_time(:microsecond) + seconds * 1_000_000

    ports
    |> Enum.map(fn port ->
      Port.connect(port, self())

      task =
        Task.async(fn ->
          receive do
            :go -> drive(stop_at, fn -> fun.(port) end, [])
          end
        end)

      Port.connect(port, task.pid)
      send(task.pid, :go)
      task
    end)
    |> Task.await_many(:infinity)
    |> merge()
  end

  defp merge(results), do: {Enum.sum(Enum.map(results, &length/1)), Enum.concat(results)}

  defp drive(stop_at, fun, acc) do
    t0 = System.monotonic_time(:microsecond)

    if t0 >= stop_at do
      acc
    else
      fun.()
      drive(stop_at, fun, [System.monotonic_time(:microsecond) - t0 | acc])
    end
  end

  # ------------------------------------------------------------ helpers

  defp median(list), do: percentile(list, 50)

  defp percentile(list, p) do
    sorted = Enum.sort(list)
    Enum.at(sorted, min(length(sorted) - 1, trunc(length(sorted) * p / 100)))
  end

  defp fmt(x) when is_float(x), do: :erlang.float_to_binary(x, decimals: 1)
  defp fmt(x), do: to_string(x)

  defp cpus_allowed do
    case File.read("/proc/self/status") do
      {:ok, status} ->
        case Regex.run(~r/Cpus_allowed_list:\s*(\S+)/, status) do
          [_, list] -> list
          _ -> "?"
        end

      _ ->
        "?"
    end
  end
end

defmodule Bench.JSON do
  # Just enough JSON for a flat map of numbers and strings.
  def encode(map) when is_map(map) do
    body =
      map
      |> Enum.sort()
      |> Enum.map_join(",", fn {k, v} -> ~s("#{k}":#{value(v)}) end)

    "{" <> body <> "}"
  end

  defp value(v) when is_float(v), do: :erlang.float_to_binary(v, decimals: 3)
  defp value(v) when is_integer(v), do: Integer.to_string(v)
  defp value(v), do: inspect(to_string(v))
end

Bench.main(System.argv())
