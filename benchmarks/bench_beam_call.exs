# A call from Python into the BEAM (protocol 1.1, `snakepit.beam.call`) against
# a call from the BEAM into Python, on the same worker, rounds alternating.
#
#     cd elixir_harness
#     taskset -c 0 mix run ../benchmarks/bench_beam_call.exs          # pinned to one core
#     mix run ../benchmarks/bench_beam_call.exs --json                 # JSON on the last line
#
# Each round times 2 000 round trips of each kind, one at a time:
#   - supervisor -> worker: `Snakepit.Worker.call(w, %{method: "echo", args: [i]})`,
#     timed in the BEAM around each call;
#   - worker -> supervisor: `snakepit.beam.call("echo", i)` inside one Python
#     method (tests/workers/beam_caller.py `bench`), timed in Python around
#     each call; the BEAM function is `fn x -> x end`, run in its own process
#     under the worker's Task.Supervisor as every beam call is.
# The figure is the per-round ratio of the medians (beam call / small call),
# min / median / max over the rounds. Not a test: nothing here asserts.

Logger.configure(level: :critical)
Code.require_file("bench_support.exs", __DIR__)

defmodule BenchBeamCall do
  alias BenchSupport.Stats

  @worker_py Path.expand("../tests/workers/beam_caller.py", __DIR__)
  @rounds 9
  @calls 2_000
  @warmup 500

  def main(argv) do
    json? = "--json" in argv
    python = Snakepit.OSProcess.python()

    IO.puts("bench_beam_call: OTP #{System.otp_release()}, Elixir #{System.version()}, #{python}")

    IO.puts(
      "CPUs allowed: #{Stats.cpus_allowed()}, schedulers online: #{System.schedulers_online()}"
    )

    {:ok, w} =
      Snakepit.Worker.start_link(
        target: @worker_py,
        beam_functions: %{"echo" => fn x -> x end},
        health_interval: nil
      )

    # warm-up: both directions
    small(w, @warmup)
    beam(w, @warmup)

    rounds =
      for r <- 1..@rounds do
        # alternate which goes first
        {s, b} =
          if rem(r, 2) == 1 do
            s = small(w, @calls)
            {s, beam(w, @calls)}
          else
            b = beam(w, @calls)
            {small(w, @calls), b}
          end

        %{
          small_us: Stats.median(s),
          beam_us: Stats.median(b),
          ratio: Stats.median(b) / Stats.median(s)
        }
      end

    {rmin, rmed, rmax} = Stats.spread(Enum.map(rounds, & &1.ratio))

    IO.puts("\n#{@rounds} rounds of #{@calls} round trips each (medians per round, us):")

    for {r, i} <- Enum.with_index(rounds, 1) do
      IO.puts(
        "  round #{i}: BEAM->Python call #{Stats.fmt(r.small_us)}, " <>
          "Python->BEAM beam call #{Stats.fmt(r.beam_us)}, ratio #{Stats.fmt(r.ratio)}"
      )
    end

    IO.puts(
      "\nbeam call / small call: min #{Stats.fmt(rmin)}, median #{Stats.fmt(rmed)}, max #{Stats.fmt(rmax)}"
    )

    if json? do
      rows =
        Enum.map_join(rounds, ", ", fn r ->
          ~s({"small_us": #{r.small_us}, "beam_us": #{r.beam_us}, "ratio": #{r.ratio}})
        end)

      IO.puts(
        ~s({"ratio": {"min": #{rmin}, "median": #{rmed}, "max": #{rmax}}, "rounds": [#{rows}]})
      )
    end

    Snakepit.Worker.stop(w)
  end

  # BEAM -> Python: one small call at a time, each timed here (us).
  defp small(w, n) do
    for i <- 1..n do
      t0 = System.monotonic_time()
      {:ok, ^i} = Snakepit.Worker.call(w, %{method: "echo", args: [i]})
      System.convert_time_unit(System.monotonic_time() - t0, :native, :nanosecond) / 1000
    end
  end

  # Python -> BEAM: one Python call making n beam calls, each timed in Python (us).
  defp beam(w, n) do
    {:ok, times} =
      Snakepit.Worker.call(w, %{method: "bench", args: ["echo", n]}, timeout: 120_000)

    Enum.map(times, &(&1 * 1.0e6))
  end
end

BenchBeamCall.main(System.argv())
