# numpy results consumed in Elixir: tensors, numbers, maps, DateTimes (docs/types.md).
#
#     cd elixir_harness && mix run ../examples/elixir/embeddings.exs
#
# The Python half is examples/embeddings_worker.py. With Nx in your project,
# Snakepit.Tensor.to_nx/1 turns each tensor into an Nx.Tensor without
# touching its elements; here (no Nx) we read them with to_list/1.

Logger.configure(level: :warning)
alias Snakepit.Tensor

{:ok, _} =
  Snakepit.Pool.start_link(
    name: :embeddings,
    target: Path.expand("../embeddings_worker.py", __DIR__),
    size: 1
  )

call = fn method, args ->
  {:ok, result} = Snakepit.call(:embeddings, %{method: method, args: args})
  result
end

texts = ["a good movie", "a bad plot", "great acting, good story", "awful sound"]

%Tensor{type: {:f, 32}, shape: {4, 8}} = vectors = call.("embed", [texts])

IO.puts(
  "embed: #{inspect(vectors.shape)} #{inspect(vectors.type)}, #{byte_size(vectors.data)} bytes"
)

%{"count" => 4, "updated" => %DateTime{} = updated} = call.("add", [texts])
IO.puts("add: 4 texts indexed at #{DateTime.to_iso8601(updated)}")

# A query as a tensor built in Elixir (it could come from Nx: Tensor.from_nx/1)...
[first_row | _] = Tensor.to_list(vectors)
query = Tensor.from_list(first_row, {:f, 32})

for %{"index" => i, "text" => text, "score" => score} <- call.("search", [query]) do
  IO.puts("search: ##{i} #{inspect(text)} #{Float.round(score, 3)}")
end

# ...or as a plain list of floats (the parameter is annotated np.ndarray).
[%{"index" => 0} | _] = call.("search", [first_row, 1])

%{"mean" => mean, "norms" => norms, "max" => max} = call.("stats", [])

IO.puts(
  "stats: mean #{inspect(mean.shape)}, norms #{inspect(Enum.map(Tensor.to_list(norms), &Float.round(&1, 3)))}, max #{Float.round(max, 3)}"
)
