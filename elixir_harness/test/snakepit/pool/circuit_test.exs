defmodule Snakepit.Pool.CircuitTest do
  # Pure functions over a map, times passed in: no Python, no processes.
  use ExUnit.Case, async: true

  alias Snakepit.Pool.Circuit

  defp new(opts \\ []),
    do: Circuit.new(Keyword.merge([threshold: 3, window: 1_000, cooldown: 500], opts))

  defp fail(c, times), do: Enum.reduce(times, c, &Circuit.failure(&2, &1))

  describe "closed" do
    test "lets calls through and opens at threshold failures within the window" do
      c = new()
      assert {:ok, _} = Circuit.check(c, 0)
      c = fail(c, [0, 100])
      assert c.state == :closed
      c = fail(c, [200])
      assert c.state == :open
      assert c.trips == 1
    end

    test "failures older than the window do not count" do
      c = fail(new(), [0, 100, 1_500, 1_550])
      assert c.state == :closed
      assert fail(c, [1_600]).state == :open
    end
  end

  describe "open" do
    test "fails fast with the time left, then turns half open and grants one probe" do
      c = fail(new(), [0, 0, 0])
      assert {:open, 500} = Circuit.check(c, 0)
      assert {:open, 100} = Circuit.check(c, 400)
      assert Circuit.state(c, 400) == :open
      assert Circuit.state(c, 500) == :half_open

      assert {:probe, c} = Circuit.check(c, 500)
      ref = make_ref()
      c = Circuit.probe(c, ref)
      # others wait for the probe's outcome
      assert {:open, 0} = Circuit.check(c, 501)
      assert Circuit.success(c, ref).state == :closed
    end

    test "a failing probe opens it for another cooldown" do
      c = fail(new(), [0, 0, 0])
      {:probe, c} = Circuit.check(c, 600)
      c = c |> Circuit.probe(make_ref()) |> Circuit.failure(650)
      assert c.state == :open and c.opened_at == 650 and c.trips == 2
      assert {:open, 500} = Circuit.check(c, 650)
    end

    test "a probe released (cancelled, handed back) lets the next call probe" do
      c = fail(new(), [0, 0, 0])
      {:probe, c} = Circuit.check(c, 600)
      ref = make_ref()
      c = c |> Circuit.probe(ref) |> Circuit.release(ref)
      assert {:probe, _} = Circuit.check(c, 601)
    end

    test "the success of another call than the probe changes nothing" do
      c = fail(new(), [0, 0, 0])
      {:probe, c} = Circuit.check(c, 600)
      c = Circuit.probe(c, make_ref())
      assert Circuit.success(c, make_ref()).state == :half_open
    end
  end
end
