defmodule Snakepit.Pool.Cluster do
  @moduledoc false
  # One logical pool over connected BEAM nodes (`distributed: true`,
  # docs/pool.md "Pools across nodes").
  #
  # Membership. A distributed pool's tree runs a `:pg` scope of its own
  # (`scope/1`, one atom per pool name, so pools with the same name on
  # different nodes find each other and nothing else) and this process, which
  # joins the scope's group `{Snakepit.Pool, name}`. `:pg` tells every member
  # who the others are; a member that leaves, or whose node goes away, drops
  # out of the group.
  #
  # Load and models. Every `:gossip_interval` ms this process asks its pool for
  # a summary (`load/1`: ready, busy and free workers, queue depth, the models
  # its ready workers hold) and sends it to the other members, which keep the
  # latest one per member in their table (an ETS table callers read). A member
  # that hears from a newcomer answers at once, so a node that joins is known
  # within one message. A member's row goes when the member's process goes
  # (monitored: its node going away included). So a remote member's picture is
  # at most one interval (plus a message) old; the local pool's queue depth is
  # exact (a counter the pool updates whenever a call joins or leaves its
  # queue, never on the path of a call served at once).
  #
  # Calls. `Snakepit.call/3` looks the pool up here (`lookup/1`, one
  # `:persistent_term` read; nil for a pool that is not distributed, whose
  # calls go exactly the way they always did) and `run/3` picks a member
  # (`Snakepit.Pool.Cluster.Route`). A call for a remote member is sent straight
  # to that member's pool process, as a local call is to the local one: the
  # caller monitors it through the reply alias, so when its node goes away the
  # caller gets `:node_down` (from the `:noconnection` monitor message) once,
  # and a reply can no longer arrive after it. The call's deadline, a
  # monotonic time of the caller's node, is moved into the member node's
  # monotonic time through both nodes' time offsets (exact on one machine; off
  # by the system clocks' skew across machines, which only moves the time
  # Python is told to give up: the caller's own timeout still bounds its wait).

  use GenServer

  alias Snakepit.Call
  alias Snakepit.Pool.Cluster.Route
  alias Snakepit.Pool.Queue

  # counters: the local queue depth, calls routed here and calls routed away
  @queue 1
  @local 2
  @remote 3

  @type info :: %{
          table: :ets.tid(),
          counters: :counters.counters_ref(),
          scope: atom(),
          stale_after: pos_integer()
        }

  # ------------------------------------------------------- in the pool tree

  @doc """
  A distributed pool's options with what its processes share (`:cluster`:
  its scope and counters), or the options unchanged.
  """
  @spec prepare(keyword()) :: keyword()
  def prepare(opts) do
    if opts[:distributed] do
      counters = :counters.new(3, [:write_concurrency])
      Keyword.put(opts, :cluster, %{scope: scope(opts[:name]), counters: counters})
    else
      opts
    end
  end

  @doc """
  The child a distributed pool's tree runs after its server ([] otherwise): a
  supervisor of the `:pg` scope and this process, restarted together, so that
  a failure here never restarts the workers that come after it in the pool's
  `rest_for_one` tree (short of this supervisor giving up).
  """
  @spec children(keyword()) :: [Supervisor.child_spec()]
  def children(opts) do
    case opts[:cluster] do
      nil ->
        []

      %{scope: scope} ->
        members = [
          %{id: :pg, start: {:pg, :start_link, [scope]}},
          %{id: __MODULE__, start: {GenServer, :start_link, [__MODULE__, opts]}}
        ]

        [
          %{
            id: __MODULE__,
            type: :supervisor,
            start: {Supervisor, :start_link, [members, [strategy: :one_for_all]]}
          }
        ]
    end
  end

  @doc "The counters the pool server keeps its queue depth in (nil: not distributed); zeroed."
  @spec attach(keyword()) :: :counters.counters_ref() | nil
  def attach(opts) do
    case opts[:cluster] do
      nil ->
        nil

      %{counters: counters} ->
        :counters.put(counters, @queue, 0)
        counters
    end
  end

  @doc "Called by the pool server whenever its queue depth changes."
  @spec queue_depth(:counters.counters_ref() | nil, non_neg_integer()) :: :ok
  def queue_depth(nil, _depth), do: :ok
  def queue_depth(counters, depth), do: :counters.put(counters, @queue, depth)

  @doc "The pool server's summary of itself for the other members (run in the pool server)."
  @spec load(map()) :: map()
  def load(state) do
    ready = for {_, %{status: :ready} = w} <- state.workers, do: w

    %{
      ready: length(ready),
      busy: Enum.count(ready, &(map_size(&1.inflight) > 0)),
      free: Enum.count(ready, &Queue.room_for_any?/1),
      queue: state.qlen,
      models: Enum.reduce(ready, MapSet.new(), &MapSet.union(&2, &1.models))
    }
  end

  @doc "The `:pg` scope of the distributed pool `name`."
  @spec scope(atom()) :: atom()
  def scope(name), do: :"snakepit_pool_cluster:#{name}"

  # ------------------------------------------------------------- callers

  @doc "The cluster of pool `pool` on this node, or nil (not distributed, or not running here)."
  @spec lookup(term()) :: info() | nil
  def lookup(pool), do: :persistent_term.get({__MODULE__, pool}, nil)

  @doc "Runs `call` on the member of distributed pool `pool` that `Route` picks."
  @spec run(atom(), info(), Call.t()) :: {:ok, term()} | {:error, Snakepit.Error.t()}
  def run(pool, info, call) do
    case choose(info, call) do
      :local ->
        :counters.add(info.counters, @local, 1)
        Call.run(pool, call)

      member ->
        :counters.add(info.counters, @remote, 1)
        Call.run(member.pool, rebase(call, member))
    end
  end

  defp choose(info, %{affinity: nil}) do
    case :counters.get(info.counters, @queue) do
      # the usual case: no table read
      0 -> :local
      queue -> pick(info, queue, nil)
    end
  end

  defp choose(info, %{affinity: key}),
    do: pick(info, :counters.get(info.counters, @queue), Queue.model_key(key))

  defp pick(info, queue, key) do
    {local, remotes} = members(info)
    Route.pick(queue, local, remotes, key)
  catch
    # the cluster process is gone (the pool is stopping): as if alone
    :error, :badarg -> :local
  end

  # A member that has not been heard from for `stale_after` ms (its pool too
  # busy to answer, its node cut off but not yet declared down) gets no calls.
  defp members(info) do
    me = node()
    oldest = Call.now_ms() - info.stale_after

    Enum.reduce(:ets.tab2list(info.table), {nil, []}, fn
      {_, %{node: ^me} = entry}, {_, remotes} -> {entry, remotes}
      {_, %{at: at} = entry}, {local, remotes} when at >= oldest -> {local, [entry | remotes]}
      _stale, acc -> acc
    end)
  end

  defp stale_after(interval), do: max(5 * interval, 2_000)

  # The deadline in the member node's monotonic time (see the moduledoc).
  defp rebase(%{deadline: nil} = call, _member), do: call

  defp rebase(call, %{offset: offset}),
    do: %{call | deadline: call.deadline + :erlang.time_offset(:millisecond) - offset}

  @doc """
  What the distributed pool `pool` knows of its cluster (nil when it is not
  distributed): `members` (one map per member, this node's included:
  `node`, `pool`, `ready`, `busy`, `free`, `queue_depth`, `models`, `age_ms`
  since it was published), `routed_local` and `routed_remote` (calls this node's callers
  sent to the local pool and to other members).
  """
  @spec stats(atom()) :: map() | nil
  def stats(pool) do
    case lookup(pool) do
      nil ->
        nil

      info ->
        now = Call.now_ms()

        members =
          for {_, e} <- :ets.tab2list(info.table) do
            %{
              node: e.node,
              pool: e.pool,
              ready: e.ready,
              busy: e.busy,
              free: e.free,
              queue_depth: e.queue,
              models: e.models |> MapSet.to_list() |> Enum.sort(),
              age_ms: now - e.at
            }
          end

        %{
          members: Enum.sort_by(members, &{&1.node != node(), &1.node}),
          routed_local: :counters.get(info.counters, @local),
          routed_remote: :counters.get(info.counters, @remote)
        }
    end
  catch
    :error, :badarg -> nil
  end

  # --------------------------------------------------------------- server

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    %{scope: scope, counters: counters} = opts[:cluster]
    name = opts[:name]
    table = :ets.new(__MODULE__, [:set, :protected, read_concurrency: true])
    group = {Snakepit.Pool, name}
    :ok = :pg.join(scope, group, self())
    interval = Keyword.get(opts, :gossip_interval, 200)

    :persistent_term.put({__MODULE__, name}, %{
      table: table,
      counters: counters,
      scope: scope,
      stale_after: stale_after(interval)
    })

    send(self(), :"$snakepit_gossip_tick")

    {:ok,
     %{
       name: name,
       scope: scope,
       group: group,
       table: table,
       interval: interval,
       entry: nil,
       members: %{}
     }}
  end

  @impl true
  def handle_info(:"$snakepit_gossip_tick", state) do
    Process.send_after(self(), :"$snakepit_gossip_tick", state.interval)

    state =
      case local_entry(state) do
        nil ->
          state

        entry ->
          :ets.insert(state.table, {self(), entry})
          for pid <- others(state), do: send(pid, {:"$snakepit_gossip", self(), entry})
          %{state | entry: entry}
      end

    {:noreply, state}
  end

  def handle_info({:"$snakepit_gossip", from, entry}, state) do
    state =
      case state.members do
        %{^from => _} ->
          state

        _ ->
          # a member we had not heard from: it hears from us at once
          if state.entry, do: send(from, {:"$snakepit_gossip", self(), state.entry})
          %{state | members: Map.put(state.members, from, Process.monitor(from))}
      end

    :ets.insert(state.table, {from, %{entry | at: Call.now_ms()}})
    {:noreply, state}
  end

  def handle_info({:DOWN, _mon, :process, pid, _reason}, state) do
    :ets.delete(state.table, pid)
    {:noreply, %{state | members: Map.delete(state.members, pid)}}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    :persistent_term.erase({__MODULE__, state.name})
    :ok
  end

  defp others(state), do: :pg.get_members(state.scope, state.group) -- [self()]

  defp local_entry(state) do
    pool = Process.whereis(state.name)

    if pool do
      load = GenServer.call(pool, :cluster_load, max(state.interval, 1_000))

      Map.merge(load, %{
        pool: pool,
        node: node(),
        offset: :erlang.time_offset(:millisecond),
        at: Call.now_ms()
      })
    end
  catch
    # the pool is busy or restarting: publish at the next tick
    :exit, _ -> nil
  end
end
