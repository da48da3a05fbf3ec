# The BEAM's side of a call from Python into the BEAM (`snakepit.beam.call`),
# without Python: what the worker does for one `{:beam_call}` frame, against
# the ways of running a function in a process of its own.
#
#     cd elixir_harness
#     taskset -c 0 mix run ../benchmarks/bench_beam_side.exs
#
# The frames go to a port running `cat > /dev/null` (the write is real, the
# reader costs nothing here). Each line is the best of 5 loops of 10 000,
# in µs per beam call:
#   - the worker's path: decode the frame, `BeamCalls.start/5` (the call sent
#     to an idle runner under the worker's Task.Supervisor, or a new one), the
#     runner's reply and its check that the function left it clean, `done/5`
#     (the port write, the runner back to idle);
#   - the floor: decode the frame, encode a reply, write it (no process);
#   - `spawn_monitor` + the reply sent back + the write;
#   - `Task.Supervisor.start_child` + monitor + the reply sent back + the write
#     (what the worker did for every beam call before runners were reused).
# Not a test: nothing here asserts.

Logger.configure(level: :critical)

defmodule BenchBeamSide do
  alias Snakepit.Worker.BeamCalls

  @n 10_000

  def main do
    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        {:packet, 4},
        args: ["-c", "cat > /dev/null"]
      ])

    {:ok, sup} = Task.Supervisor.start_link()

    state =
      BeamCalls.new(beam_functions: %{"echo" => fn x -> x end})
      |> Map.merge(%{port: port, worker_id: "bench", opts: [], id: "bench", beam_sup: sup})

    frame =
      :erlang.term_to_binary({:beam_call, 5, "echo", [5], %{call_id: 3, timeout_ms: 120_000}})

    me = self()
    fun = fn x -> x end

    IO.puts("bench_beam_side: OTP #{System.otp_release()}, Elixir #{System.version()}")

    time("the worker's path", state, fn i, s ->
      {:ok, {:beam_call, _ref, name, args, opts}} = Snakepit.Worker.Wire.decode(frame)
      s = BeamCalls.start(i, name, args, opts, s)

      receive do
        {:"$snakepit_beam_done", p, ref, bin, reuse?} -> BeamCalls.done(p, ref, bin, reuse?, s)
      end
    end)

    time("floor: decode + encode + port write", state, fn i, s ->
      {:ok, {:beam_call, _, _, _, _}} = Snakepit.Worker.Wire.decode(frame)
      Port.command(port, :erlang.term_to_binary({:beam_reply, i, {:ok, i}}))
      s
    end)

    time("spawn_monitor + reply + write", state, fn i, s ->
      {_pid, mon} =
        spawn_monitor(fn ->
          send(me, {:done, i, :erlang.term_to_binary({:beam_reply, i, {:ok, fun.(i)}})})
        end)

      write_reply(port, i, mon)
      s
    end)

    time("Task.Supervisor.start_child + monitor + reply + write", state, fn i, s ->
      {:ok, pid} =
        Task.Supervisor.start_child(sup, fn ->
          send(me, {:done, i, :erlang.term_to_binary({:beam_reply, i, {:ok, fun.(i)}})})
        end)

      write_reply(port, i, Process.monitor(pid))
      s
    end)
  end

  # As the worker does with a task's reply: the monitor dropped, the frame written.
  defp write_reply(port, i, mon) do
    receive do
      {:done, ^i, bin} ->
        Process.demonitor(mon, [:flush])
        Port.command(port, bin)
    end
  end

  defp time(label, state, fun) do
    state = loop(div(@n, 10), fun, state)

    best =
      Enum.min(
        for _ <- 1..5 do
          {us, _} = :timer.tc(fn -> loop(@n, fun, state) end)
          us / @n
        end
      )

    IO.puts(
      "  #{String.pad_trailing(label, 55)} #{:erlang.float_to_binary(best, decimals: 2)} µs"
    )
  end

  defp loop(0, _fun, state), do: state
  defp loop(n, fun, state), do: loop(n - 1, fun, fun.(n, state))
end

BenchBeamSide.main()
