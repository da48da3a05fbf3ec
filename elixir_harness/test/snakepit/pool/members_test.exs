defmodule Snakepit.Pool.MembersTest do
  # Which workers to retire and start, and when to scale: pure functions, no Python.
  use ExUnit.Case, async: true

  alias Snakepit.Pool.{Members, Queue}

  defp w(status, opts \\ []) do
    Map.merge(Queue.new_worker(), %{
      status: status,
      retiring: opts[:retiring],
      due: opts[:due],
      born: opts[:born] || 0,
      inflight: Map.new(1..(opts[:inflight] || 0)//1, &{&1, :sync})
    })
  end

  describe "plan/3" do
    test "nothing to do for a full pool" do
      assert Members.plan(%{a: w(:ready), b: w(:ready)}, 0, 2) == {[], 0}
    end

    test "a missing worker is started; one starting counts" do
      assert Members.plan(%{a: w(:ready)}, 0, 2) == {[], 1}
      assert Members.plan(%{a: w(:ready)}, 1, 2) == {[], 0}
    end

    test "a due worker is replaced surge-first: start one, retire once enough are ready" do
      workers = %{a: w(:ready, due: :max_calls), b: w(:ready)}
      assert Members.plan(workers, 0, 2) == {[], 1}
      # the replacement is starting: wait
      assert Members.plan(workers, 1, 2) == {[], 0}
      # it is ready: the due one goes
      assert Members.plan(Map.put(workers, :c, w(:ready)), 0, 2) == {[a: :max_calls], 0}
    end

    test "a due worker is kept while another is down (ready would drop below target)" do
      workers = %{a: w(:ready, due: :max_age), b: w(:down), c: w(:ready)}
      assert Members.plan(workers, 0, 2) == {[], 0}
    end

    test "several due: one at a time, oldest first" do
      workers = %{
        a: w(:ready, due: :reload, born: 5),
        b: w(:ready, due: :reload, born: 1),
        c: w(:ready)
      }

      assert Members.plan(workers, 0, 2) == {[b: :reload], 1}
    end

    test "retiring workers do not count; beyond the target the idle ones go" do
      workers = %{
        a: w(:ready, inflight: 1),
        b: w(:ready),
        c: w(:ready, inflight: 2),
        d: w(:draining, retiring: :scale_down)
      }

      assert Members.plan(workers, 0, 2) == {[b: :scale_down], 0}
    end

    test "a down worker goes before a ready one when there are too many" do
      workers = %{a: w(:ready), b: w(:down), c: w(:ready)}
      assert Members.plan(workers, 0, 2) == {[b: :scale_down], 0}
    end
  end

  describe "jittered/2" do
    test "stays within base..base + jitter and spreads" do
      values = for _ <- 1..500, do: Members.jittered(100, 10)
      assert Enum.all?(values, &(&1 in 100..110))
      assert length(Enum.uniq(values)) > 5
      assert Members.jittered(100, 0) == 100
      assert Members.jittered(nil, 10) == nil
    end
  end

  describe "scale/2" do
    defp s(fields) do
      Map.merge(
        %{
          target: 2,
          min: 1,
          max: 4,
          pending: 0,
          wait_ms: 0,
          scale_up_wait: 100,
          scale_down_idle: 1_000,
          last_up: nil,
          queued: 0,
          peak_busy: 0,
          window_ms: 1_000,
          idle: [a: 1_000]
        },
        Map.new(fields)
      )
    end

    test "up when calls waited longer than scale_up_wait" do
      assert {:up, why} = Members.scale(s(wait_ms: 150), 0)
      assert why =~ "150 ms"
      assert Members.scale(s(wait_ms: 100, window_ms: 0), 0) == :hold
    end

    test "not up at max_size, nor while a worker is starting" do
      assert Members.scale(s(wait_ms: 500, target: 4, window_ms: 0), 0) == :hold
      assert Members.scale(s(wait_ms: 500, pending: 1, window_ms: 0), 0) == :hold
    end

    test "down when a worker was never needed over a window of scale_down_idle, never below min_size" do
      assert {:down, :a, why} = Members.scale(s(peak_busy: 1), 5_000)
      assert why =~ "at most 1 of 2 workers were busy"
      assert Members.scale(s(window_ms: 999), 5_000) == :hold
      assert Members.scale(s(peak_busy: 2), 5_000) == :hold
      assert Members.scale(s(target: 1), 5_000) == :hold
    end

    test "the worker idle longest goes; none idle now: hold" do
      assert {:down, :b, _} = Members.scale(s(idle: [b: 900, a: 10]), 5_000)
      assert Members.scale(s(idle: []), 5_000) == :hold
    end

    test "no thrash: not down while calls wait, nor soon after scaling up" do
      assert Members.scale(s(queued: 1), 5_000) == :hold
      assert Members.scale(s(last_up: 4_500), 5_000) == :hold
      assert {:down, :a, _} = Members.scale(s(last_up: 3_000), 5_000)
    end
  end
end
