defmodule Snakepit.StreamTest do
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Snakepit.TestHelpers
  alias Snakepit.{Error, Pool, Stream}

  # A callback that reports every event to the test process.
  defp forward(test \\ self()), do: fn event -> send(test, {:event, event}) end

  defp collect(acc \\ []) do
    receive do
      {:event, {:data, x}} -> collect([x | acc])
      {:event, terminal} -> {Enum.reverse(acc), terminal}
    after
      30_000 -> flunk("stream did not end; got #{inspect(Enum.reverse(acc))}")
    end
  end

  describe "open/3" do
    test "delivers every chunk in order, then the return value" do
      pool = start_pool(size: 1)
      assert {:ok, ref} = Stream.open(pool, %{method: "count", args: [50]}, forward())
      assert is_reference(ref)
      assert {Enum.to_list(0..49), {:end, 50}} == collect()
      # the worker is free again
      assert {:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]})
      assert Pool.stats(pool).busy == 0
    end

    test "an exception mid-stream ends it with {:error, ...} after the chunks so far" do
      pool = start_pool(size: 1)
      {:ok, _} = Stream.open(pool, %{method: "count_then_fail", args: [3]}, forward())

      assert {[0, 1, 2], {:error, %Error{kind: :exception, type: "RuntimeError"} = e}} = collect()
      assert e.message =~ "failed after 3 chunks"
    end

    test "an unknown method ends the stream with :unknown_method" do
      pool = start_pool(size: 1)
      {:ok, _} = Stream.open(pool, %{method: "nope"}, forward())
      assert {[], {:error, %Error{kind: :unknown_method}}} = collect()
    end

    test "an unknown pool is an error at open" do
      assert {:error, %Error{kind: :noproc}} =
               Stream.open(:no_such_pool, %{method: "count"}, forward())
    end

    test "a slow consumer blocks the Python generator; its mailbox stays within the window" do
      pool = start_pool(size: 1)
      test = self()

      consumer = fn
        {:data, i} ->
          send(test, {:got, self(), i})
          # wait for the test to let us take the next chunk
          receive do
            :next -> :ok
          end

        terminal ->
          send(test, {:event, terminal})
      end

      {:ok, _ref} = Stream.open(pool, %{method: "count", args: [200]}, consumer, window: 4)
      assert_receive {:got, stream_pid, 0}, 10_000

      # Chunk 0 is being consumed; Python may run 3 more ahead, not one more.
      wait_until(fn -> mailbox(stream_pid) == 3 end)
      Process.sleep(300)
      assert mailbox(stream_pid) == 3

      for i <- 0..198 do
        assert mailbox(stream_pid) <= 4
        send(stream_pid, :next)
        assert_receive {:got, ^stream_pid, n}, 10_000
        assert n == i + 1
      end

      send(stream_pid, :next)
      assert_receive {:event, {:end, 200}}, 10_000
    end

    test "a callback that raises cancels the stream; the worker stays usable" do
      pool = start_pool(size: 1)

      log =
        capture_log(fn ->
          {:ok, _} =
            Stream.open(pool, %{method: "count", args: [1_000, 0.005]}, fn
              {:data, 2} -> raise "consumer bug"
              _ -> :ok
            end)

          wait_until(fn -> Pool.stats(pool).busy == 0 end)
        end)

      assert log =~ "consumer bug"
      assert {:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]})
    end
  end

  describe "cancel/1" do
    test "ends a running stream with :cancelled and frees the worker" do
      pool = start_pool(size: 1)
      test = self()

      {:ok, ref} =
        Stream.open(pool, %{method: "count", args: [100_000, 0.001]}, fn
          {:data, i} -> if i == 3, do: send(test, :three)
          terminal -> send(test, {:event, terminal})
        end)

      assert_receive :three, 10_000
      assert :ok = Stream.cancel(ref)
      assert_receive {:event, {:error, %Error{kind: :cancelled}}}, 10_000
      assert {:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]})
    end

    test "cancels a stream still waiting in the queue" do
      pool = start_pool(size: 1)
      blocker = Task.async(fn -> Snakepit.call(pool, %{method: "block", args: [0.5]}) end)
      wait_until(fn -> Pool.stats(pool).busy == 1 end)

      {:ok, ref} = Stream.open(pool, %{method: "count", args: [5]}, forward())
      wait_until(fn -> Pool.stats(pool).queue_depth == 1 end)
      :ok = Stream.cancel(ref)
      assert {[], {:error, %Error{kind: :cancelled}}} = collect()
      assert {:ok, "woke"} = Task.await(blocker)
    end

    test "after the end it is a no-op" do
      pool = start_pool(size: 1)
      {:ok, ref} = Stream.open(pool, %{method: "count", args: [2]}, forward())
      assert {[0, 1], {:end, 2}} = collect()
      assert :ok = Stream.cancel(ref)
      refute_receive {:event, _}, 100
    end
  end

  defp mailbox(pid) do
    case Process.info(pid, :message_queue_len) do
      {:message_queue_len, n} -> n
      nil -> 0
    end
  end
end
