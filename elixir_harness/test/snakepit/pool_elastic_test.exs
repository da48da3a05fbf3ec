defmodule Snakepit.PoolElasticTest do
  # Elastic size and affinity spill with real Python workers.
  use ExUnit.Case, async: false

  import Snakepit.TestHelpers
  alias Snakepit.Pool

  @worker Path.expand("../fixtures/pool_worker.py", __DIR__)

  defp call_async(pool, method, args, opts \\ []) do
    Task.async(fn ->
      Snakepit.call(pool, %{method: method, args: args}, [timeout: 60_000] ++ opts)
    end)
  end

  describe "min_size / max_size" do
    test "grows when calls wait longer than scale_up_wait, shrinks workers idle scale_down_idle" do
      pool =
        start_pool(
          target: @worker,
          size: 1,
          min_size: 1,
          max_size: 3,
          scale_up_wait: 50,
          scale_down_idle: 600,
          events: self()
        )

      assert %{target_size: 1, actual_size: 1, min_size: 1, max_size: 3, last_scaled: nil} =
               Pool.stats(pool)

      calls = for _ <- 1..8, do: call_async(pool, "sleep", [0.4])
      assert_receive {:snakepit_pool, ^pool, {:scaled, 1, 2, why}}, 10_000
      assert why =~ "waited"
      assert_receive {:snakepit_pool, ^pool, {:scaled, 2, 3, _}}, 10_000
      assert Enum.all?(calls, &match?({:ok, _}, Task.await(&1, 60_000)))

      assert %{target_size: 3, last_scaled: %{from: 2, to: 3, why: _, ago_ms: _}} =
               Pool.stats(pool)

      # nothing to do: back to min_size, one worker at a time
      assert_receive {:snakepit_pool, ^pool, {:scaled, 3, 2, why}}, 10_000
      assert why =~ "idle"
      assert_receive {:snakepit_pool, ^pool, {:scaled, 2, 1, _}}, 10_000

      wait_until(fn ->
        match?(%{target_size: 1, actual_size: 1, draining: 0}, Pool.stats(pool))
      end)

      refute_receive {:snakepit_pool, ^pool, {:scaled, 1, _, _}}, 300
      assert {:ok, 7} = Snakepit.call(pool, %{method: "echo", args: [7]})
    end

    test "never above max_size" do
      pool = start_pool(target: @worker, size: 1, max_size: 2, scale_up_wait: 10)
      calls = for _ <- 1..6, do: call_async(pool, "sleep", [0.3])
      Enum.each(calls, &Task.await(&1, 60_000))
      assert Pool.stats(pool).target_size <= 2
      assert length(Pool.stats(pool).worker_details) <= 2
    end
  end

  describe "affinity_wait" do
    test "a call waiting for a busy holder spills to another worker, which loads the model" do
      pool = start_pool(target: @worker, size: 2, affinity_wait: 100)
      # one worker loads m1 and is kept busy with it
      assert {:ok, %{"pid" => holder}} = Snakepit.call(pool, %{method: "predict", args: ["m1"]})

      wait_until(fn ->
        Enum.any?(Pool.stats(pool).worker_details, &(&1.loaded_models == ["m1"]))
      end)

      busy = call_async(pool, "predict", ["m1", 1.0], affinity: "m1")
      wait_until(fn -> Pool.stats(pool).busy == 1 end)

      assert {:ok, %{"pid" => other, "loaded" => ["m1"]}} =
               Snakepit.call(pool, %{method: "predict", args: ["m1"]},
                 affinity: "m1",
                 timeout: 30_000
               )

      assert other != holder
      assert {:ok, %{"pid" => ^holder}} = Task.await(busy, 30_000)
      # both hold it now
      wait_until(fn ->
        Enum.all?(Pool.stats(pool).worker_details, &(&1.loaded_models == ["m1"]))
      end)
    end

    test "without affinity_wait (the default) the call waits for its holder" do
      pool = start_pool(target: @worker, size: 2)
      assert {:ok, %{"pid" => holder}} = Snakepit.call(pool, %{method: "predict", args: ["m2"]})

      wait_until(fn ->
        Enum.any?(Pool.stats(pool).worker_details, &(&1.loaded_models == ["m2"]))
      end)

      busy = call_async(pool, "predict", ["m2", 0.5], affinity: "m2")
      wait_until(fn -> Pool.stats(pool).busy == 1 end)

      assert {:ok, %{"pid" => ^holder}} =
               Snakepit.call(pool, %{method: "predict", args: ["m2"]},
                 affinity: "m2",
                 timeout: 30_000
               )

      Task.await(busy, 30_000)
    end

    test "a miss goes to the worker with the fewest models; LRU eviction is reported" do
      pool = start_pool(target: @worker, size: 2)
      # worker A gets two models (its cache holds two), B none
      assert {:ok, %{"pid" => a}} =
               Snakepit.call(pool, %{method: "predict", args: ["x"]}, affinity: "x")

      wait_until(fn ->
        Enum.any?(Pool.stats(pool).worker_details, &(&1.loaded_models == ["x"]))
      end)

      assert {:ok, %{"pid" => ^a}} =
               Snakepit.call(pool, %{method: "predict", args: ["y"]}, affinity: "x")

      wait_until(fn ->
        Enum.any?(Pool.stats(pool).worker_details, &(&1.loaded_models == ["x", "y"]))
      end)

      # a new model goes to B (fewest models), not A
      assert {:ok, %{"pid" => b}} =
               Snakepit.call(pool, %{method: "predict", args: ["z"]}, affinity: "z")

      assert b != a

      # A loads a third: its least recently used (x) is evicted and reported
      assert {:ok, %{"loaded" => ["y", "w"]}} =
               Snakepit.call(pool, %{method: "predict", args: ["w"]}, affinity: "y")

      wait_until(fn ->
        Enum.any?(Pool.stats(pool).worker_details, &(&1.loaded_models == ["w", "y"]))
      end)
    end
  end
end
