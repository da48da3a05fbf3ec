defmodule Snakepit.Worker.RestartTest do
  # The crash-loop policy as a pure function of times: no Python, no clock.
  use ExUnit.Case, async: true

  alias Snakepit.Worker.Restart

  @opts [stable_after: 500, restart_window: 10_000]

  describe "next/5" do
    test "a first crash restarts at once" do
      assert Restart.next(1_000, nil, nil, 0, @opts) == {1, 0}
      assert Restart.next(1_000, 900, nil, 0, @opts) == {1, 0}
    end

    test "early crashes within the window back off: 200, 400, 800 ms" do
      # never ready, each crash 50 ms after the last
      assert Restart.next(1_050, nil, 1_000, 1, @opts) == {2, 200}
      assert Restart.next(1_100, nil, 1_050, 2, @opts) == {3, 400}
      # ready, but for less than :stable_after
      assert Restart.next(1_500, 1_200, 1_100, 3, @opts) == {4, 800}
    end

    test "a crash of a stable process starts afresh" do
      assert Restart.next(5_000, 4_500, 4_400, 6, @opts) == {1, 0}
    end

    test "a crash long after the previous one starts afresh" do
      assert Restart.next(20_000, nil, 9_999, 6, @opts) == {1, 0}
    end

    test "restart_window: 0 never backs off" do
      opts = Keyword.put(@opts, :restart_window, 0)
      assert Restart.next(1_000, nil, 1_000, 5, opts) == {1, 0}
    end
  end

  describe "backoff/1" do
    test "doubles from 200 ms and stops at 5 s" do
      assert Enum.map(1..8, &Restart.backoff/1) == [0, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]
    end
  end
end
