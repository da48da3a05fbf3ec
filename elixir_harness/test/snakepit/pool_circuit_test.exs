defmodule Snakepit.PoolCircuitTest do
  # The circuit breaker and the one retry of idempotent methods, with real
  # Python workers: crashes and timeouts trip the circuit, user exceptions do
  # not; an open circuit fails calls fast, then one probe decides.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Snakepit.TestHelpers
  alias Snakepit.{Error, Pool}

  @worker Path.expand("../fixtures/pool_worker.py", __DIR__)

  defp call(pool, method, args \\ [], opts \\ [timeout: 30_000]),
    do: Snakepit.call(pool, %{method: method, args: args}, opts)

  defp crash(pool), do: assert({:error, %Error{kind: :worker_crashed}} = call(pool, "crash"))

  describe "circuit_breaker" do
    test "crashes open it; calls fail fast; after the cooldown one probe closes it" do
      pool =
        start_pool(
          target: @worker,
          size: 1,
          circuit_breaker: [threshold: 2, window: 10_000, cooldown: 500],
          events: self()
        )

      assert Pool.stats(pool).circuit == :closed

      capture_log(fn ->
        crash(pool)
        crash(pool)
      end)

      assert_receive {:snakepit_pool, ^pool, {:circuit, :pool, :open, _why}}
      assert Pool.stats(pool).circuit == :open

      assert {:error, %Error{kind: :circuit_open, details: %{scope: :pool, retry_in_ms: left}}} =
               call(pool, "echo", [1])

      assert left > 0 and left <= 500

      # the cooldown passes: half open, and the next call is the probe
      wait_until(fn -> Pool.stats(pool).circuit == :half_open end)
      wait_until(fn -> Pool.stats(pool).ready == 1 end)
      assert {:ok, 1} = call(pool, "echo", [1])
      assert_receive {:snakepit_pool, ^pool, {:circuit, :pool, :half_open, _}}
      assert_receive {:snakepit_pool, ^pool, {:circuit, :pool, :closed, _}}
      assert Pool.stats(pool).circuit == :closed
      assert {:ok, 2} = call(pool, "echo", [2])
    end

    test "a probe that crashes opens it again" do
      pool = start_pool(target: @worker, size: 1, circuit_breaker: [threshold: 1, cooldown: 300])

      capture_log(fn -> crash(pool) end)
      assert Pool.stats(pool).circuit == :open
      wait_until(fn -> Pool.stats(pool).circuit == :half_open end)
      wait_until(fn -> Pool.stats(pool).ready == 1 end)
      capture_log(fn -> crash(pool) end)
      assert Pool.stats(pool).circuit == :open
      assert {:error, %Error{kind: :circuit_open}} = call(pool, "echo", [1])
    end

    test "user exceptions do not trip it" do
      pool = start_pool(target: @worker, size: 1, circuit_breaker: [threshold: 2])

      for _ <- 1..10,
          do: assert({:error, %Error{kind: :exception}} = call(pool, "fail"))

      assert Pool.stats(pool).circuit == :closed
      assert {:ok, 1} = call(pool, "echo", [1])
    end

    test "timeouts trip it" do
      pool =
        start_pool(target: @worker, size: 2, circuit_breaker: [threshold: 2, cooldown: 60_000])

      for _ <- 1..2,
          do: assert({:error, %Error{kind: :timeout}} = call(pool, "sleep", [5], timeout: 100))

      wait_until(fn -> Pool.stats(pool).circuit == :open end)
      assert {:error, %Error{kind: :circuit_open}} = call(pool, "echo", [1])
    end

    test "per_method: a failing method opens its own circuit; the others go on" do
      pool =
        start_pool(
          target: @worker,
          size: 2,
          circuit_breaker: [threshold: 2, cooldown: 60_000, per_method: true]
        )

      capture_log(fn ->
        crash(pool)
        crash(pool)
      end)

      assert %{circuit: :closed, circuits: %{"crash" => :open}} = Pool.stats(pool)

      assert {:error, %Error{kind: :circuit_open, details: %{scope: "crash"}}} =
               call(pool, "crash")

      assert {:ok, 1} = call(pool, "echo", [1])
    end
  end

  describe "idempotent methods" do
    @describetag :tmp_dir

    # The pool learns which methods are idempotent from each worker's
    # catalogue, which arrives just after :ready.
    defp start_known_pool(opts) do
      pool = start_pool(opts)
      wait_until(fn -> Enum.all?(Pool.stats(pool).worker_details, &(&1.max_inflight == 64)) end)
      pool
    end

    test "a call whose worker crashed is retried once on another worker", %{tmp_dir: dir} do
      pool = start_known_pool(target: @worker, size: 2)
      marker = Path.join(dir, "marker")

      capture_log(fn ->
        assert {:ok, pid} = call(pool, "crash_once", [marker])
        crashed = marker |> File.read!() |> String.to_integer()
        assert pid != crashed
      end)

      assert Pool.stats(pool).retried == 1
    end

    test "a method not declared idempotent is not retried", %{tmp_dir: dir} do
      pool = start_known_pool(target: @worker, size: 2)
      marker = Path.join(dir, "marker")

      capture_log(fn ->
        assert {:error, %Error{kind: :worker_crashed}} = call(pool, "crash_once_unsafe", [marker])
      end)

      assert Pool.stats(pool).retried == 0
    end

    test "only once: a second crash fails the call" do
      pool = start_known_pool(target: @worker, size: 2)

      capture_log(fn ->
        assert {:error, %Error{kind: :worker_crashed}} = call(pool, "crash_always")
      end)

      assert Pool.stats(pool).retried == 1
    end

    test "describe shows idempotent" do
      [w | _] = Pool.workers(start_pool(target: @worker, size: 1))
      {:ok, %{methods: methods}} = Snakepit.Worker.describe(w)
      assert %{idempotent: true} = Enum.find(methods, &(&1.name == "crash_once"))
      refute Map.has_key?(Enum.find(methods, &(&1.name == "crash")), :idempotent)
    end
  end
end
