defmodule Snakepit.Worker.CallersTest do
  # Monitors of plain BEAM processes standing in for callers: no Python.
  use ExUnit.Case, async: true

  alias Snakepit.Worker.Callers

  defp state(calls \\ %{}), do: Map.merge(%{calls: calls}, Callers.new())

  defp idle_process, do: spawn(fn -> receive do: (:stop -> :ok) end)

  describe "watch/2" do
    test "a caller is monitored once, however often it calls" do
      pid = idle_process()
      s1 = Callers.watch(state(), pid)
      assert s1 == Callers.watch(s1, pid)
      assert map_size(s1.callers) == 1
    end

    test "at the limit, callers with nothing in flight are let go and the limit doubles past the rest" do
      busy = for _ <- 1..700, do: idle_process()
      idle = for _ <- 1..324, do: idle_process()
      calls = busy |> Enum.with_index() |> Map.new(fn {pid, id} -> {id, %{caller: pid}} end)

      full = Enum.reduce(busy ++ idle, state(calls), &Callers.watch(&2, &1))
      assert map_size(full.callers) == 1_024

      newcomer = idle_process()
      s = Callers.watch(full, newcomer)
      assert Enum.sort(Map.keys(s.callers)) == Enum.sort([newcomer | busy])
      assert s.callers_limit == 1_400

      Enum.each(busy ++ idle ++ [newcomer], &send(&1, :stop))
    end
  end

  describe "down/3" do
    test "a watched caller's death gives the ids of its calls in flight" do
      pid = idle_process()
      other = idle_process()
      calls = %{1 => %{caller: pid}, 2 => %{caller: other}, 3 => %{caller: pid}}
      s = state(calls) |> Callers.watch(pid) |> Callers.watch(other)
      mon = s.callers[pid]

      send(pid, :stop)
      assert_receive {:DOWN, ^mon, :process, ^pid, _}

      assert {:ok, s, ids} = Callers.down(s, pid, mon)
      assert Enum.sort(ids) == [1, 3]
      refute Map.has_key?(s.callers, pid)
      send(other, :stop)
    end

    test "a monitor that is not a caller's is not ours" do
      assert Callers.down(state(), self(), make_ref()) == :error
    end
  end
end
