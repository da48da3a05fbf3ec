defmodule Snakepit.TermGen do
  @moduledoc false
  # A small random term generator (no StreamData): the terms docs/protocol.md
  # section 2 says survive a round trip unchanged. Map keys are binaries or
  # integers only, because keys Python cannot keep apart (1 / 1.0 / true,
  # :a / "a") would collapse, as the protocol warns.

  @atoms [:ok, :error, true, false, nil, :some_tag]

  def term(0), do: leaf()

  def term(depth) do
    case :rand.uniform(10) do
      n when n <= 4 -> leaf()
      5 -> list(depth)
      6 -> List.to_tuple(list(depth))
      7 -> map(depth)
      8 -> improper(depth)
      9 -> list(depth)
      10 -> map(depth)
    end
  end

  defp list(depth), do: for(_ <- 1..:rand.uniform(5), do: term(depth - 1)) |> maybe_empty()

  defp maybe_empty(list), do: if(:rand.uniform(8) == 1, do: [], else: list)

  defp improper(depth) do
    [term(depth - 1) | leaf_not_list()]
  end

  defp map(depth) do
    keys =
      if :rand.uniform(2) == 1,
        do: for(_ <- 1..:rand.uniform(4), do: utf8()),
        else: for(_ <- 1..:rand.uniform(4), do: small_int())

    Map.new(keys, &{&1, term(depth - 1)})
  end

  defp leaf do
    case :rand.uniform(9) do
      1 -> small_int()
      2 -> Enum.random([2 ** 40, -(2 ** 70), 2 ** 130 + 7, -2_147_483_649, 4_294_967_296])
      3 -> :rand.uniform() * Enum.random([1, -1, 1.0e-300, 1.0e300])
      4 -> utf8()
      5 -> :rand.bytes(:rand.uniform(12) - 1)
      6 -> Enum.random(@atoms)
      7 -> Enum.random([self(), make_ref()])
      8 -> Enum.random([[], {}, %{}, ""])
      9 -> for(_ <- 1..:rand.uniform(5), do: :rand.uniform(255))
    end
  end

  # An improper tail must not be a list.
  defp leaf_not_list do
    case leaf() do
      l when is_list(l) -> small_int()
      other -> other
    end
  end

  defp small_int, do: :rand.uniform(2_000) - 1_000

  defp utf8 do
    for(_ <- 1..:rand.uniform(8), do: Enum.random(~c"abcxyz é✓漢🐍")) |> List.to_string()
  end
end
