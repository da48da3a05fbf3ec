defmodule Snakepit.Pool.QueueTest do
  # Pure functions over plain maps: no Python, no processes.
  use ExUnit.Case, async: true

  alias Snakepit.Pool.Queue

  defp worker(status, last_used, models \\ []),
    do: %{status: status, last_used: last_used, models: Queue.models(models)}

  defp call(affinity \\ nil), do: %{ref: make_ref(), affinity: affinity}

  defp queue_of(calls), do: Enum.reduce(calls, Queue.new(), &Queue.push(&2, &1))

  defp refs({calls, queue}), do: {Enum.map(calls, & &1.ref), queue}

  describe "pick/2" do
    test "the idle worker used longest ago takes a call without affinity" do
      workers = %{a: worker(:idle, 5), b: worker(:idle, 2), c: worker(:busy, 0)}
      assert Queue.pick(call(), workers) == :b
    end

    test "nil when no worker is idle: the call waits" do
      workers = %{a: worker(:busy, 1), b: worker(:down, 0)}
      assert Queue.pick(call(), workers) == nil
      assert Queue.pick(call("gpt2"), workers) == nil
    end

    test "affinity prefers an idle holder of the key over a less recently used worker" do
      workers = %{a: worker(:idle, 1), b: worker(:idle, 9, ["gpt2"])}
      assert Queue.pick(call("gpt2"), workers) == :b
    end

    test "affinity waits for a busy holder rather than going elsewhere" do
      workers = %{a: worker(:idle, 1), b: worker(:busy, 9, ["gpt2"])}
      assert Queue.pick(call("gpt2"), workers) == nil
    end

    test "affinity falls back to any worker when only down workers hold the key" do
      workers = %{a: worker(:idle, 1), b: worker(:down, 0, ["gpt2"])}
      assert Queue.pick(call("gpt2"), workers) == :a
    end

    test "an atom key matches the string a worker reports" do
      workers = %{a: worker(:idle, 1), b: worker(:idle, 9, ["gpt2"])}
      assert Queue.pick(call(:gpt2), workers) == :b
    end

    test "nil for no workers at all" do
      assert Queue.pick(call(), %{}) == nil
    end
  end

  describe "least_recently_used/1" do
    test "takes a map or a list of pairs and ignores workers that are not idle" do
      pairs = [{:a, worker(:busy, 0)}, {:b, worker(:idle, 3)}, {:c, worker(:idle, 7)}]
      assert Queue.least_recently_used(pairs) == :b
      assert Queue.least_recently_used(Map.new(pairs)) == :b
      assert Queue.least_recently_used([{:a, worker(:down, 0)}]) == nil
    end
  end

  describe "eligible?/3" do
    test "any worker may take a call without affinity" do
      assert Queue.eligible?(call(), worker(:idle, 0), %{})
    end

    test "only a holder may take a call whose key a live worker holds" do
      holder = worker(:busy, 0, ["gpt2"])
      other = worker(:idle, 0)
      workers = %{h: holder, o: other}
      assert Queue.eligible?(call("gpt2"), holder, workers)
      refute Queue.eligible?(call("gpt2"), other, workers)
    end

    test "anyone may take it when no live worker holds the key" do
      other = worker(:idle, 0)
      workers = %{h: worker(:down, 0, ["gpt2"]), o: other}
      assert Queue.eligible?(call("gpt2"), other, workers)
    end
  end

  describe "take/3" do
    test "an empty queue gives nothing" do
      assert Queue.take(Queue.new(), worker(:idle, 0), %{}) == nil
    end

    test "FIFO: the head goes first" do
      [c1, c2, c3] = calls = [call(), call(), call()]
      {taken, rest} = Queue.take(queue_of(calls), worker(:idle, 0), %{})
      assert taken == c1
      assert :queue.to_list(rest) == [c2, c3]
    end

    test "skips calls waiting for another worker's key, keeping their order" do
      holder = worker(:busy, 0, ["gpt2"])
      me = worker(:idle, 0)
      workers = %{h: holder, me: me}
      [a1, a2, free, a3] = calls = [call("gpt2"), call("gpt2"), call(), call("gpt2")]

      {taken, rest} = Queue.take(queue_of(calls), me, workers)
      assert taken == free
      assert :queue.to_list(rest) == [a1, a2, a3]
    end

    test "nil when every queued call waits for another worker" do
      workers = %{h: worker(:busy, 0, ["gpt2"]), me: worker(:idle, 0)}
      assert Queue.take(queue_of([call("gpt2")]), workers.me, workers) == nil
    end
  end

  describe "push_front/2" do
    test "a requeued call is next in line" do
      [c1, c2] = [call(), call()]
      queue = Queue.push_front(queue_of([c1]), c2)
      assert {^c2, _} = Queue.take(queue, worker(:idle, 0), %{})
      assert Queue.size(queue) == 2
    end
  end

  describe "cancel/2" do
    test "removes the call with that ref and keeps the others in order" do
      [c1, c2, c3] = calls = [call(), call(), call()]
      {removed, rest} = Queue.cancel(queue_of(calls), c2.ref)
      assert removed == [c2]
      assert :queue.to_list(rest) == [c1, c3]
    end

    test "an unknown ref removes nothing" do
      queue = queue_of([call()])
      assert {[], ^queue} = refs(Queue.cancel(queue, make_ref()))
    end
  end

  describe "serve_order/1" do
    test "idle workers only, least recently used first" do
      workers = %{
        a: worker(:idle, 5),
        b: worker(:busy, 0),
        c: worker(:idle, 1),
        d: worker(:down, 0)
      }

      assert Queue.serve_order(workers) == [:c, :a]
    end
  end

  describe "models/1" do
    test "atoms become strings, other keys stay as they are" do
      assert Queue.models([:gpt2, "bert", 7]) == MapSet.new(["gpt2", "bert", 7])
    end
  end
end
