# The snakepit demo: a pool of 3 Python workers, calls, a streamed training
# run, affinity routing, a kill -9 and the restart, stats.
#
#     cd elixir_harness && mix run ../examples/demo.exs
#
# The Python side is examples/ml_worker.py; each worker keeps its own models.

# Crashes below are on purpose; this script prints its own account of them.
Logger.configure(level: :critical)

defmodule Demo do
  @pool :ml

  def run do
    worker_py = Path.expand("ml_worker.py", __DIR__)

    title("snakepit demo: Elixir supervising Python workers over Erlang Ports")
    say("worker: #{Path.relative_to_cwd(worker_py)}")

    # ------------------------------------------------------------------
    section(1, "Start a pool of 3 workers")

    {time_us, {:ok, _sup}} =
      :timer.tc(fn -> Snakepit.Pool.start_link(name: @pool, target: worker_py, size: 3) end)

    [first | _] = Snakepit.Pool.workers(@pool)
    ready = Snakepit.Worker.info(first).ready
    say("Python #{ready.python} at #{Snakepit.OSProcess.python()}, snakepit_py #{ready.version}")
    say("ready in #{ms(time_us)} ms:")
    for w <- details(), do: say("  #{w.worker_id}  OS pid #{w.os_pid}")

    # ------------------------------------------------------------------
    section(2, "Plain calls: the pool picks an idle worker")
    {:ok, r} = call(%{method: "load_model", args: ["sentiment"]})
    say(~s[load_model("sentiment")     -> loaded on #{who(r)}: #{inspect(r["loaded"])}])

    say("without affinity, calls spread over the idle workers; only #{who(r)} has the model:")

    for text <- ["I love this", "awful service", "it is a chair"] do
      case call(%{method: "predict", args: ["sentiment", text]}) do
        {:ok, p} ->
          say(~s[  predict(#{inspect(text)}) -> #{p["label"]} (#{p["score"]}) on #{who(p)}])

        {:error, e} ->
          say(~s[  predict(#{inspect(text)}) -> #{e.type} on another worker: #{e.message}])
      end
    end

    # ------------------------------------------------------------------
    section(3, ~s[Affinity: affinity: "sentiment" goes where the model is loaded])
    wait_for_model("sentiment")

    for text <- ["great stuff", "I hate mondays", "good, good, good", "bad bad"] do
      {:ok, p} = call(%{method: "predict", args: ["sentiment", text]}, affinity: "sentiment")
      say(~s[predict(#{inspect(text)}) -> #{pad(p["label"], 8)} (#{p["score"]})  on #{who(p)}])
    end

    # ------------------------------------------------------------------
    section(4, "Streaming: a training run, one chunk per epoch")
    me = self()
    data = for i <- 1..100, do: [i, rem(i * 7, 13)]

    {:ok, _ref} =
      Snakepit.Stream.open(
        @pool,
        %{method: "train", args: [data], kwargs: %{epochs: 12, name: "sentiment-v2"}},
        fn event -> send(me, {:train, event}) end
      )

    trained = progress_loop()
    IO.puts("")
    say("trained #{inspect(trained["model"])} on #{who(trained)}")

    # ------------------------------------------------------------------
    section(5, "Crash: kill -9 a worker's Python process in the middle of a call")
    wait_for_model("sentiment")
    victim = Enum.find(details(), &("sentiment" in &1.loaded_models))

    say(
      "#{victim.worker_id} (OS pid #{victim.os_pid}) holds \"sentiment\"; streaming a run on it ..."
    )

    {:ok, _ref} =
      Snakepit.Stream.open(
        @pool,
        %{method: "train", args: [data], kwargs: %{epochs: 50}},
        fn event -> send(me, {:doomed, event}) end,
        affinity: "sentiment"
      )

    receive do
      {:doomed, {:data, %{"epoch" => e}}} ->
        say("  epoch #{e} arrived; now: kill -9 #{victim.os_pid}")
    end

    killed_at = System.monotonic_time()
    System.cmd("kill", ["-9", "#{victim.os_pid}"])
    error = doomed_error()
    say("  the stream's caller got at once: #{inspect(error.kind)}: #{error.message}")

    replacement = wait_for_replacement(victim)

    restart_ms =
      ms(System.convert_time_unit(System.monotonic_time() - killed_at, :native, :microsecond))

    say(
      "  #{victim.worker_id} is back as OS pid #{replacement.os_pid}, ready #{restart_ms} ms after the kill"
    )

    say("  its models died with it; affinity \"sentiment\" now falls back to any worker:")

    for _ <- 1..2 do
      case call(%{method: "predict", args: ["sentiment", "good"]}, affinity: "sentiment") do
        {:ok, p} -> say("    predict -> #{p["label"]} on #{who(p)}")
        {:error, e} -> say("    predict -> #{e.type} on a worker without the model: #{e.message}")
      end
    end

    {:ok, r} = call(%{method: "load_model", args: ["sentiment"]}, affinity: "sentiment")
    say("  load_model(\"sentiment\") again -> on #{who(r)}")

    # ------------------------------------------------------------------
    section(6, "Stats")
    stats = Snakepit.Pool.stats(@pool)

    say(
      "workers #{stats.workers}  busy #{stats.busy}  idle #{stats.idle}  queue #{stats.queue_depth}  " <>
        "avg queue time #{Float.round(stats.avg_queue_time_ms, 3)} ms  " <>
        "served #{stats.served}  restarts #{stats.restarts}"
    )

    say("")
    say("  worker  OS pid   status  served  loaded models")

    for w <- stats.worker_details do
      say(
        "  #{pad(w.worker_id, 6)}  #{pad(w.os_pid, 7)}  #{pad(w.status, 6)}  #{pad(w.served, 6)}  " <>
          Enum.join(w.loaded_models, ", ")
      )
    end

    pids = Enum.map(stats.worker_details, & &1.os_pid)
    :ok = Snakepit.Pool.stop(@pool)
    alive = Enum.filter(pids, &Snakepit.OSProcess.alive?/1)
    say("")
    say("pool stopped; Python processes still alive: #{inspect(alive)}")
  end

  defp call(request, opts \\ []),
    do: Snakepit.call(@pool, request, Keyword.put_new(opts, :timeout, 10_000))

  defp progress_loop do
    receive do
      {:train, {:data, %{"epoch" => e, "epochs" => n, "loss" => loss}}} ->
        bar = String.duplicate("#", e) <> String.duplicate(".", n - e)

        loss = :erlang.float_to_binary(loss * 1.0, decimals: 4)
        # a live line on a terminal, one line per epoch in a log
        start = if match?({:ok, _}, :io.columns()), do: "\r", else: "\n"
        IO.write("#{start}   epoch #{pad(e, 2)}/#{n} [#{bar}] loss #{loss}")

        progress_loop()

      {:train, {:end, result}} ->
        result

      {:train, {:error, e}} ->
        raise e
    end
  end

  defp doomed_error do
    receive do
      {:doomed, {:data, _}} -> doomed_error()
      {:doomed, {:error, e}} -> e
      {:doomed, {:end, _}} -> raise "the run finished before the kill"
    end
  end

  defp wait_for_model(model) do
    unless Enum.any?(details(), &(model in &1.loaded_models)) do
      Process.sleep(10)
      wait_for_model(model)
    end
  end

  defp wait_for_replacement(victim) do
    case Enum.find(details(), &(&1.worker_id == victim.worker_id)) do
      %{status: status, os_pid: pid} = w when status != :down and pid != victim.os_pid ->
        w

      _ ->
        Process.sleep(5)
        wait_for_replacement(victim)
    end
  end

  defp details, do: Snakepit.Pool.stats(@pool).worker_details

  defp who(%{"pid" => pid}) do
    case Enum.find(details(), &(&1.os_pid == pid)) do
      nil -> "OS pid #{pid}"
      w -> w.worker_id
    end
  end

  defp ms(us), do: Float.round(us / 1000, 1)
  defp pad(value, n), do: String.pad_trailing(to_string(value), n)
  defp title(text), do: IO.puts("\n#{text}\n#{String.duplicate("=", String.length(text))}")
  defp section(n, text), do: IO.puts("\n#{n}. #{text}")
  defp say(""), do: IO.puts("")
  defp say(text), do: IO.puts("   " <> text)
end

Demo.run()
