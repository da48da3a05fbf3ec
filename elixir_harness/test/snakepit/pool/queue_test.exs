defmodule Snakepit.Pool.QueueTest do
  # Pure functions over plain maps: no Python, no processes.
  use ExUnit.Case, async: true

  alias Snakepit.Pool.Queue

  # A ready worker with `n` sync calls in flight (room for one call unless
  # `opts` give it more), last used at `last_used`.
  defp worker(status, last_used, models \\ [], opts \\ []) do
    w = %{Queue.new_worker() | last_used: last_used, models: Queue.models(models)}

    w =
      if opts[:threads] || opts[:async],
        do:
          Queue.capacity(
            w,
            %{threads: opts[:threads] || 1, max_inflight: opts[:max_inflight] || 64},
            Enum.map(opts[:async] || [], &%{name: &1, async: true})
          ),
        else: w

    case status do
      :idle -> %{w | status: :ready}
      :busy -> Queue.add(%{w | status: :ready}, call(), :sync)
      :down -> %{w | status: :down}
    end
  end

  defp call(affinity \\ nil, method \\ "echo"),
    do: %{ref: make_ref(), affinity: affinity, method: method}

  defp queue_of(calls), do: Enum.reduce(calls, Queue.new(), &Queue.push(&2, &1))

  defp refs({calls, queue}), do: {Enum.map(calls, & &1.ref), queue}

  describe "pick/2" do
    test "the idle worker used longest ago takes a call without affinity" do
      workers = %{a: worker(:idle, 5), b: worker(:idle, 2), c: worker(:busy, 0)}
      assert Queue.pick(call(), workers) == :b
    end

    test "nil when no worker has room: the call waits" do
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

    test "affinity goes to a busy holder that has room for one more" do
      workers = %{a: worker(:idle, 1), b: worker(:busy, 9, ["gpt2"], threads: 2)}
      assert Queue.pick(call("gpt2"), workers) == :b
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

    test "a worker with a free thread takes a sync call; the one with fewer in flight first" do
      two = worker(:busy, 0, [], threads: 2)
      workers = %{a: two, b: worker(:busy, 1)}
      assert Queue.pick(call(), workers) == :a
      # with one more in flight it has no thread left
      workers = %{workers | a: Queue.add(two, call(), :sync)}
      assert Queue.pick(call(), workers) == nil
      # an idle worker wins over one that still has room but is working
      assert Queue.pick(call(), %{a: two, c: worker(:idle, 9)}) == :c
    end

    test "a --threads 1 worker busy with a sync call takes async calls, not sync ones" do
      workers = %{a: worker(:busy, 0, [], async: ["nap"])}
      assert Queue.pick(call(nil, "nap"), workers) == :a
      assert Queue.pick(call(nil, "echo"), workers) == nil
    end

    test "max_inflight caps async calls" do
      w = worker(:idle, 0, [], async: ["nap"], max_inflight: 2)
      w = w |> Queue.add(call(), :async) |> Queue.add(call(), :async)
      assert Queue.pick(call(nil, "nap"), %{a: w}) == nil
    end
  end

  describe "capacity/3" do
    test "a pipeline lets sync calls wait inside a worker beyond its threads" do
      w = Queue.capacity(Queue.new_worker(2), %{threads: 1, max_inflight: 64}, [])
      assert %{threads: 1, sync_max: 3} = w
      w = w |> Queue.add(call(), :sync) |> Queue.add(call(), :sync)
      w = %{w | status: :ready}
      assert Queue.room?(w, call())
      refute Queue.room?(Queue.add(w, call(), :sync), call())
      # never beyond max_inflight
      assert %{sync_max: 2} =
               Queue.capacity(Queue.new_worker(5), %{threads: 1, max_inflight: 2}, [])

      # until the capacity is known: one call
      assert %{sync_max: 1} = Queue.new_worker(5)
    end

    test "threads, max_inflight and the async methods; odd values leave room for one" do
      methods = [%{name: "nap", async: true}, %{name: "echo", async: false}]
      w = Queue.capacity(Queue.new_worker(), %{threads: 4, max_inflight: 8}, methods)
      assert %{threads: 4, max_inflight: 8} = w
      assert Queue.kind(w, "nap") == :async
      assert Queue.kind(w, "echo") == :sync
      assert Queue.kind(w, "unknown") == :sync

      w = Queue.capacity(Queue.new_worker(), %{threads: 0}, [])
      assert %{threads: 1, max_inflight: 1} = w
      # never more threads than calls accepted
      assert %{sync_max: 2} = Queue.capacity(w, %{threads: 5, max_inflight: 2}, [])
    end
  end

  describe "add/3 and remove/2" do
    test "count calls in flight and the sync ones among them" do
      [c1, c2] = [call(), call()]
      w = Queue.new_worker() |> Queue.add(c1, :sync) |> Queue.add(c2, :async)
      assert %{sync: 1} = w
      assert map_size(w.inflight) == 2
      assert {:ok, %{sync: 0} = w} = Queue.remove(w, c1.ref)
      assert Queue.remove(w, c1.ref) == :error
      assert {:ok, %{sync: 0, inflight: inflight}} = Queue.remove(w, c2.ref)
      assert inflight == %{}
    end
  end

  describe "best/2" do
    test "takes a map or a list of pairs and ignores workers without room" do
      pairs = [{:a, worker(:busy, 0)}, {:b, worker(:idle, 3)}, {:c, worker(:idle, 7)}]
      assert Queue.best(pairs, call()) == :b
      assert Queue.best(Map.new(pairs), call()) == :b
      assert Queue.best([{:a, worker(:down, 0)}], call()) == nil
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

    test "a worker with no free thread skips sync calls for an async one" do
      me = worker(:busy, 0, [], async: ["nap"])
      [s1, a1, s2] = calls = [call(), call(nil, "nap"), call()]
      {taken, rest} = Queue.take(queue_of(calls), me, %{me: me})
      assert taken == a1
      assert :queue.to_list(rest) == [s1, s2]
    end

    test "nil when every queued call waits for another worker" do
      workers = %{h: worker(:busy, 0, ["gpt2"]), me: worker(:idle, 0)}
      assert Queue.take(queue_of([call("gpt2")]), workers.me, workers) == nil
    end
  end

  describe "room_for_any?/1" do
    test "a free thread, or async methods and calls to spare" do
      assert Queue.room_for_any?(worker(:idle, 0))
      refute Queue.room_for_any?(worker(:busy, 0))
      assert Queue.room_for_any?(worker(:busy, 0, [], async: ["nap"]))
      refute Queue.room_for_any?(worker(:down, 0))
    end
  end

  describe "push_front/2 and requeue/2" do
    test "a call pushed to the front is next in line" do
      [c1, c2] = [call(), call()]
      queue = Queue.push_front(queue_of([c1]), c2)
      assert {^c2, _} = Queue.take(queue, worker(:idle, 0), %{})
      assert Queue.size(queue) == 2
    end

    test "calls handed back go before the others, in the order they were handed back" do
      [waiting, r1, r2, r3] = [call(), call(), call(), call()]
      queue = Enum.reduce([r1, r2, r3], queue_of([waiting]), &Queue.requeue(&2, &1))

      assert queue |> :queue.to_list() |> Enum.map(& &1.ref) ==
               Enum.map([r1, r2, r3, waiting], & &1.ref)
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

  describe "models/1" do
    test "atoms become strings, other keys stay as they are" do
      assert Queue.models([:gpt2, "bert", 7]) == MapSet.new(["gpt2", "bert", 7])
    end
  end

  describe "spill and fewest models" do
    test "a spilled affinity call goes to any worker with room when its holders are busy" do
      workers = %{
        a: worker(:idle, 1, ["x", "y"]),
        b: worker(:busy, 9, ["gpt2"]),
        c: worker(:idle, 2)
      }

      call = call("gpt2")
      assert Queue.pick(call, workers) == nil
      # the fewest models loaded first
      assert Queue.pick(Queue.spill(call), workers) == :c
    end

    test "a spilled call still prefers a holder with room" do
      workers = %{a: worker(:idle, 1), b: worker(:idle, 9, ["gpt2"])}
      assert Queue.pick(Queue.spill(call("gpt2")), workers) == :b
    end

    test "a miss prefers the worker with the fewest models" do
      workers = %{a: worker(:idle, 1, ["x", "y"]), b: worker(:idle, 9, ["z"])}
      assert Queue.pick(call("new"), workers) == :b
    end

    test "a draining holder does not hold a call back" do
      workers = %{a: worker(:idle, 1), b: %{worker(:idle, 9, ["gpt2"]) | status: :draining}}
      assert Queue.pick(call("gpt2"), workers) == :a
    end

    test "eligible?: a spilled call may go to any worker" do
      holder = worker(:busy, 9, ["gpt2"])
      other = worker(:idle, 1)
      workers = %{a: other, b: holder}
      refute Queue.eligible?(call("gpt2"), other, workers)
      assert Queue.eligible?(Queue.spill(call("gpt2")), other, workers)
    end
  end

  describe "expire/2 and update/3" do
    test "takes out the calls queued at or before the cutoff, in order, and tells the oldest left" do
      calls = for t <- [5, 1, 9, 3], do: Map.put(call(), :queued_at, t)
      {expired, rest, oldest} = Queue.expire(queue_of(calls), 3)
      assert Enum.map(expired, & &1.queued_at) == [1, 3]
      assert rest |> :queue.to_list() |> Enum.map(& &1.queued_at) == [5, 9]
      assert oldest == 5
      assert {[], _, nil} = Queue.expire(Queue.new(), 3)
    end

    test "update changes one call in its place" do
      [a, b, c] = calls = for _ <- 1..3, do: call()
      {found, queue} = Queue.update(queue_of(calls), b.ref, &Map.put(&1, :x, 1))
      assert found.x == 1
      assert queue |> :queue.to_list() |> Enum.map(& &1.ref) == [a.ref, b.ref, c.ref]
      assert {nil, _} = Queue.update(queue, make_ref(), & &1)
    end
  end
end
