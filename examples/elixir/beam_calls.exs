# Python calls the BEAM (protocol 1.1): a pool whose Python method asks the
# BEAM for data mid-stream and writes its results back.
#
#     cd elixir_harness && mix run ../examples/elixir/beam_calls.exs
#
# The Python half is examples/beam_calls.py. An Agent stands in for the
# database the functions would use (Ecto, a cache, PubSub, a lock).

Logger.configure(level: :warning)

{:ok, db} =
  Agent.start_link(fn ->
    %{
      batches: %{"job-1" => [[1, 5, 9], [2, 8, 3, 7, 12], [10, 0, 1]]},
      results: [],
      users: %{1 => %{id: 1, name: "ada lovelace"}, 2 => %{id: 2, name: "alan turing"}}
    }
  end)

fetch_user = fn id ->
  case Agent.get(db, &get_in(&1, [:users, id])) do
    nil -> raise KeyError, "no user #{inspect(id)}"
    user -> %{"id" => user.id, "name" => user.name}
  end
end

functions = %{
  "get_config" => fn "threshold" -> 4 end,
  "next_batch" => fn job, n -> Agent.get(db, &Enum.at(&1.batches[job] || [], n)) end,
  "store_result" => fn job, n, summary ->
    ctx = Snakepit.Worker.beam_call_context()
    Agent.update(db, &%{&1 | results: [{job, n, summary, ctx.worker_id} | &1.results]})
    :ok
  end,
  "fetch_user" => fetch_user
}

{:ok, _} =
  Snakepit.Pool.start_link(
    name: :beam_demo,
    target: Path.expand("../beam_calls.py", __DIR__),
    size: 2,
    beam_functions: functions
  )

IO.puts("== a stream that asks the BEAM for each batch and writes each result back")
me = self()

{:ok, _ref} =
  Snakepit.Stream.open(:beam_demo, %{method: "score_batches", args: ["job-1"]}, &send(me, &1))

summary =
  Stream.repeatedly(fn ->
    receive do
      {:data, chunk} ->
        IO.puts("  chunk  #{inspect(chunk)}")
        :more

      {:end, result} ->
        {:done, result}

      {:error, e} ->
        raise e
    after
      10_000 -> raise "no answer"
    end
  end)
  |> Enum.find(&match?({:done, _}, &1))
  |> elem(1)

IO.puts("  result #{inspect(summary)}")
stored = Agent.get(db, & &1.results) |> Enum.reverse()
for {job, n, s, worker} <- stored, do: IO.puts("  stored #{job}/#{n} by #{worker}: #{inspect(s)}")

IO.puts("== async Python fetching users from the BEAM concurrently")
{:ok, users} = Snakepit.call(:beam_demo, %{method: "enrich", args: [[1, 2]]})
IO.puts("  #{inspect(users)}")

IO.puts("== an exception in a BEAM function reaches Python as BeamCallError")
{:ok, error} = Snakepit.call(:beam_demo, %{method: "lookup", args: [99]})
IO.puts("  #{inspect(error)}")

ok? =
  summary == %{"job" => "job-1", "batches" => 3} and length(stored) == 3 and
    length(users) == 2 and error["error"] == "exception" and error["type"] == "KeyError"

if ok? do
  IO.puts("all beam calls answered")
else
  IO.puts("unexpected results")
  System.halt(1)
end
