defmodule Snakepit.PoolClusterTest do
  # Pools with `distributed: true` on real connected nodes: this test node and
  # peers started with `:peer`, each running its own Python workers.
  use ExUnit.Case, async: false

  import Snakepit.TestHelpers
  alias Snakepit.{Error, Pool, TestCluster}

  @moduletag :distributed

  # Decided when this file is compiled, before any test runs: distribution is
  # tried (and stopped again); when it cannot start here the tests are skipped,
  # and the reason printed.
  case TestCluster.probe() do
    :ok ->
      :ok

    {:error, reason} ->
      IO.puts(:stderr, "\nskipping the :distributed tests (#{__MODULE__}): #{reason}")
      @moduletag skip: "distributed Erlang unavailable: #{reason}"
  end

  @worker "pool_worker.py"

  setup_all do
    {:ok, started?} = TestCluster.start_distribution()
    {peer_a, a} = TestCluster.start_peer("snakepit_a")
    {peer_b, b} = TestCluster.start_peer("snakepit_b")

    on_exit(fn ->
      for peer <- [peer_a, peer_b], do: quietly(fn -> :peer.stop(peer) end)
      if started?, do: Node.stop()
    end)

    %{a: a, b: b}
  end

  # The same distributed pool on this node and on `nodes`, `size` workers each;
  # returns its name once this node knows every member, all workers ready.
  defp start_cluster(nodes, opts \\ []) do
    name = unique_name("dist")

    opts =
      Keyword.merge(
        [name: name, target: fixture(@worker), size: 1, distributed: true, gossip_interval: 50],
        opts
      )

    for node <- nodes, do: :pong = Node.ping(node)
    for node <- nodes, do: :ok = TestCluster.start_pool(node, opts)
    start_supervised!({Pool, opts}, id: name)

    on_exit(fn ->
      for node <- nodes, do: quietly(fn -> :erpc.call(node, Pool, :stop, [name], 30_000) end)
    end)

    # (each member's picture is at most a gossip interval old: the workers it
    # published may not have been ready yet)
    wait_until(fn ->
      ms = members(name)
      length(ms) == length(nodes) + 1 and Enum.all?(ms, &(&1.ready == opts[:size]))
    end)

    name
  end

  # cleanup of what may be gone already (a halted node, a stopped pool)
  defp quietly(fun) do
    fun.()
  catch
    _, _ -> :ok
  end

  # (nil while the cluster process restarts)
  defp members(name), do: (Pool.stats(name).cluster || %{members: []}).members
  defp member(name, node), do: Enum.find(members(name), &(&1.node == node))

  defp os_pids_on(node, name), do: :erpc.call(node, Snakepit.TestHelpers, :os_pids, [name])

  defp whoami(name), do: Snakepit.call(name, %{method: "whoami"}, timeout: 30_000)

  describe "distributed: true" do
    test "forms one pool: every member sees the others, with their workers", %{a: a, b: b} do
      name = start_cluster([a, b])
      stats = Pool.stats(name)

      assert [%{node: me}, _, _] = stats.cluster.members
      assert me == node()

      assert stats.cluster.members |> Enum.map(& &1.node) |> Enum.sort() ==
               Enum.sort([node(), a, b])

      assert Enum.all?(stats.cluster.members, &(&1.ready == 1 and &1.queue_depth == 0))

      # and so does every peer
      remote = :erpc.call(a, Pool, :stats, [name])
      assert length(remote.cluster.members) == 3
    end

    test "calls prefer the local pool while it has room", %{a: a, b: b} do
      name = start_cluster([a, b])
      [local] = os_pids(name)

      for _ <- 1..20, do: assert({:ok, ^local} = whoami(name))

      assert %{routed_local: 20, routed_remote: 0} = Pool.stats(name).cluster
    end

    test "once calls wait locally, new calls go to a member with a free worker", %{a: a} do
      name = start_cluster([a])
      [remote] = os_pids_on(a, name)

      # the only local worker is busy and one call waits behind it
      busy =
        Task.async(fn -> Snakepit.call(name, %{method: "sleep", args: [3]}, timeout: 30_000) end)

      wait_until(fn -> Pool.stats(name).busy == 1 end)
      queued = Task.async(fn -> whoami(name) end)
      wait_until(fn -> Pool.stats(name).queue_depth == 1 end)

      assert {:ok, ^remote} = whoami(name)
      assert Pool.stats(name).cluster.routed_remote == 1

      [local] = os_pids(name)
      assert {:ok, ^local} = Task.await(busy, 30_000)
      assert {:ok, ^local} = Task.await(queued, 30_000)
    end

    test "affinity goes to the node whose workers report the model", %{a: a, b: b} do
      name = start_cluster([a, b])
      [on_b] = os_pids_on(b, name)

      # b loads "m1" (a call made there stays there)
      assert {:ok, %{"pid" => ^on_b}} =
               :erpc.call(b, Snakepit, :call, [name, %{method: "predict", args: ["m1"]}])

      # ... and the others see it within a gossip interval
      wait_until(fn -> member(name, b).models == ["m1"] end)

      assert :erpc.call(a, Pool, :stats, [name]).cluster.members
             |> Enum.any?(&(&1.models == ["m1"]))

      for _ <- 1..5 do
        assert {:ok, %{"pid" => ^on_b, "loaded" => ["m1"]}} =
                 Snakepit.call(name, %{method: "predict", args: ["m1"]},
                   affinity: "m1",
                   timeout: 30_000
                 )
      end

      # a model nobody holds loads locally; from then on it is local
      [local] = os_pids(name)

      assert {:ok, %{"pid" => ^local}} =
               Snakepit.call(name, %{method: "predict", args: ["m2"]}, affinity: "m2")

      assert %{routed_remote: 5, routed_local: 1} = Pool.stats(name).cluster
    end

    test "a remote call's deadline holds on the other node", %{a: a} do
      name = start_cluster([a])
      [on_a] = os_pids_on(a, name)

      :erpc.call(a, Snakepit, :call, [name, %{method: "predict", args: ["m"]}])
      wait_until(fn -> member(name, a).models == ["m"] end)

      # the deadline moved into a's clock: the call has its whole second there
      assert {:ok, %{"pid" => ^on_a}} =
               Snakepit.call(name, %{method: "predict", args: ["m", 0.2]},
                 affinity: "m",
                 timeout: 10_000
               )

      # and runs out there when it should: Python is told, and the caller too
      assert {:error, %Error{kind: :timeout}} =
               Snakepit.call(name, %{method: "sleep", args: [5]}, affinity: "m", timeout: 300)
    end

    test "a crash of the cluster layer restarts it, not the workers", %{a: a} do
      name = start_cluster([a])
      scope = Snakepit.Pool.Cluster.scope(name)
      [member] = :pg.get_local_members(scope, {Pool, name})
      before = os_pids(name)

      Process.exit(member, :kill)

      wait_until(fn -> :pg.get_local_members(scope, {Pool, name}) not in [[], [member]] end)
      wait_until(fn -> length(members(name)) == 2 end)
      assert os_pids(name) == before
      assert {:ok, _} = whoami(name)
    end

    test "non-distributed pools have no cluster and route as before" do
      name = start_pool(target: fixture(@worker), size: 1)
      refute Map.has_key?(Pool.stats(name), :cluster)
      assert Snakepit.Pool.Cluster.lookup(name) == nil
      assert {:ok, _} = whoami(name)
    end
  end

  describe "a node that goes away" do
    test "fails its calls in flight with :node_down, once; new calls go elsewhere" do
      {peer_c, c} = TestCluster.start_peer("snakepit_c")
      on_exit(fn -> quietly(fn -> :peer.stop(peer_c) end) end)
      name = start_cluster([c])
      [on_c] = os_pids_on(c, name)

      :erpc.call(c, Snakepit, :call, [name, %{method: "predict", args: ["mc"]}])
      wait_until(fn -> member(name, c).models == ["mc"] end)

      # a long call on c, and c's node halts under it
      caller =
        Task.async(fn ->
          result =
            Snakepit.call(name, %{method: "predict", args: ["mc", 60]},
              affinity: "mc",
              timeout: 60_000
            )

          # nothing else arrives for it
          {result, receive(do: (msg -> {:extra, msg}), after: (500 -> :none))}
        end)

      wait_until(fn -> :erpc.call(c, Pool, :stats, [name]).busy == 1 end)
      :erpc.cast(c, :erlang, :halt, [])

      assert {{:error, %Error{kind: :node_down} = error}, :none} = Task.await(caller, 30_000)
      assert error.details.node == c

      # c has left the pool: calls with its model go where they can now
      wait_until(fn -> member(name, c) == nil end)
      [local] = os_pids(name)

      assert {:ok, %{"pid" => ^local}} =
               Snakepit.call(name, %{method: "predict", args: ["mc"]}, affinity: "mc")

      assert {:ok, ^local} = whoami(name)

      # and c's Python process went with its node
      assert_os_pid_exited(on_c, 10_000)

      # (global's partition prevention may cut a peer that saw c go later than
      # we did: wait for the others to see it gone, then reconnect)
      wait_until(fn ->
        Enum.all?(Node.list() -- [c], &(c not in :erpc.call(&1, Node, :list, [])))
      end)
    end

    test "a member whose pool stops leaves the others' view", %{a: a} do
      name = start_cluster([a])
      :ok = :erpc.call(a, Pool, :stop, [name])
      wait_until(fn -> member(name, a) == nil end)
      assert [%{node: me}] = members(name)
      assert me == node()
    end
  end
end
