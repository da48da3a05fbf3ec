defmodule Snakepit.Pool.Cluster.RouteTest do
  use ExUnit.Case, async: true

  alias Snakepit.Pool.Cluster.Route

  defp member(node, fields \\ []) do
    Map.merge(
      %{pool: node, node: node, ready: 2, free: 2, queue: 0, models: MapSet.new()},
      Map.new(fields, fn
        {:models, m} -> {:models, MapSet.new(m)}
        kv -> kv
      end)
    )
  end

  # always the first candidate / the n-th when asked
  defp first(_n), do: 1

  describe "pick/5 without affinity" do
    test "stays local while nothing waits in the local queue" do
      assert Route.pick(0, member(:a), [member(:b, free: 9)], nil, &first/1) == :local
    end

    test "once calls wait locally, goes to a member with a free worker" do
      b = member(:b, free: 0, queue: 3)
      c = member(:c, free: 1)
      assert Route.pick(1, member(:a), [b, c], nil, &first/1) == c
    end

    test "weights members with free workers by how many they have" do
      b = member(:b, free: 1)
      c = member(:c, free: 3)
      assert Route.pick(1, nil, [b, c], nil, fn 4 -> 1 end) == b
      assert Route.pick(1, nil, [b, c], nil, fn 4 -> 2 end) == c
      assert Route.pick(1, nil, [b, c], nil, fn 4 -> 4 end) == c
    end

    test "with no free worker anywhere, the shortest queue; local on a tie" do
      b = member(:b, free: 0, queue: 5)
      c = member(:c, free: 0, queue: 2)
      assert Route.pick(4, nil, [b, c], nil, &first/1) == c
      assert Route.pick(2, nil, [b, c], nil, &first/1) == :local
    end

    test "members with no ready worker, or none at all: local" do
      assert Route.pick(3, nil, [member(:b, ready: 0, free: 0)], nil, &first/1) == :local
      assert Route.pick(3, nil, [], nil, &first/1) == :local
    end
  end

  describe "pick/5 with an affinity key" do
    test "a key the local pool holds stays local" do
      b = member(:b, models: ["m"])
      assert Route.pick(0, member(:a, models: ["m"]), [b], "m", &first/1) == :local
    end

    test "a local holder with calls waiting: a remote holder with a free worker, else local" do
      local = member(:a, models: ["m"])
      b = member(:b, models: ["m"])
      assert Route.pick(2, local, [b, member(:c)], "m", &first/1) == b
      busy = member(:b, models: ["m"], free: 0, queue: 1)
      assert Route.pick(2, local, [busy, member(:c)], "m", &first/1) == :local
    end

    test "a key only a remote member holds goes there, even if it is busy" do
      b = member(:b, models: ["m"], free: 0, queue: 4)
      assert Route.pick(0, member(:a), [b, member(:c)], "m", &first/1) == b
    end

    test "among remote holders: free workers first, else the shortest queue" do
      b = member(:b, models: ["m"], free: 0, queue: 4)
      c = member(:c, models: ["m"], free: 0, queue: 1)
      d = member(:d, models: ["m"], free: 1)
      assert Route.pick(0, nil, [b, c], "m", &first/1) == c
      assert Route.pick(0, nil, [b, c, d], "m", &first/1) == d
    end

    test "a remote holder with no ready worker is no holder" do
      b = member(:b, models: ["m"], ready: 0, free: 0)
      assert Route.pick(0, member(:a), [b], "m", &first/1) == :local
    end

    test "a key nobody holds is routed like a call without one" do
      assert Route.pick(0, member(:a), [member(:b)], "m", &first/1) == :local
      b = member(:b)
      assert Route.pick(1, member(:a), [b], "m", &first/1) == b
    end
  end
end
