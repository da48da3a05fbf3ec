defmodule Snakepit.Pool.Cluster.Route do
  @moduledoc false
  # Where a call on a distributed pool goes, as pure functions over what the
  # caller's node knows: its own pool's queue depth (exact, a counter the pool
  # keeps) and every member's last published load (`entry/0`, at most one
  # gossip interval old). No process, no clock, no table: `Snakepit.Pool.Cluster`
  # reads those and does the sending.
  #
  # The rules, in order:
  #
  #   * an affinity key the local pool holds: local, unless calls wait there
  #     and a remote holder has a free worker;
  #   * a key only remote members hold: a holder with a free worker (weighted
  #     by free workers), else the holder with the shortest queue;
  #   * otherwise (no key, or a key nobody holds): local while nothing waits in
  #     the local queue; once calls wait there, a remote member with a free
  #     worker (weighted by free workers), else the member whose queue is
  #     shorter than the local one, else local.
  #
  # "Nothing waits locally" is the local pool's own test of capacity: a call
  # queues there only when no worker has room, so a call that finds the queue
  # empty is very likely served at once (the pool itself then picks the worker).

  @type entry :: %{
          required(:pool) => pid(),
          required(:node) => node(),
          required(:ready) => non_neg_integer(),
          required(:free) => non_neg_integer(),
          required(:queue) => non_neg_integer(),
          required(:models) => MapSet.t(),
          optional(atom()) => term()
        }

  @doc """
  `:local`, or the remote member (an entry of `remotes`) to send the call to.
  `local_queue` is the local pool's queue depth now, `local` its last
  published entry (nil before the first), `key` the call's affinity key
  (normalised, see `Snakepit.Pool.Queue.model_key/1`) or nil. `rand` picks in
  1..n (`&:rand.uniform/1`; tests pass their own).
  """
  @spec pick(
          non_neg_integer(),
          entry() | nil,
          [entry()],
          term(),
          (pos_integer() -> pos_integer())
        ) ::
          :local | entry()
  def pick(local_queue, local, remotes, key, rand \\ &:rand.uniform/1)

  def pick(0, _local, _remotes, nil, _rand), do: :local
  def pick(queue, _local, remotes, nil, rand), do: overflow(queue, remotes, rand)

  def pick(queue, local, remotes, key, rand) do
    holders = Enum.filter(remotes, &(&1.ready > 0 and MapSet.member?(&1.models, key)))

    cond do
      local != nil and MapSet.member?(local.models, key) ->
        if queue == 0, do: :local, else: weighted(holders, rand) || :local

      holders != [] ->
        weighted(holders, rand) || Enum.min_by(holders, & &1.queue)

      true ->
        pick(queue, local, remotes, nil, rand)
    end
  end

  # The local queue has calls waiting: a member with room, else a shorter queue.
  defp overflow(queue, remotes, rand) do
    case weighted(remotes, rand) do
      nil ->
        case Enum.filter(remotes, &(&1.ready > 0)) do
          [] -> :local
          up -> Enum.min_by(up, & &1.queue) |> shorter_than(queue)
        end

      entry ->
        entry
    end
  end

  defp shorter_than(%{queue: q} = entry, queue) when q < queue, do: entry
  defp shorter_than(_entry, _queue), do: :local

  # A member with free workers, chosen with a probability proportional to how
  # many: callers acting on the same (stale) picture spread instead of herding
  # onto one member. Members with calls waiting have no free worker by definition.
  defp weighted(entries, rand) do
    case Enum.filter(entries, &(&1.free > 0 and &1.queue == 0)) do
      [] ->
        nil

      [one] ->
        one

      free ->
        n = rand.(Enum.sum(Enum.map(free, & &1.free)))

        Enum.reduce_while(free, n, fn e, left ->
          if left <= e.free, do: {:halt, e}, else: {:cont, left - e.free}
        end)
    end
  end
end
