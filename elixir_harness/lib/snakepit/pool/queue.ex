defmodule Snakepit.Pool.Queue do
  @moduledoc false
  # The pool's routing decisions, as pure functions over plain data: which
  # worker with room takes a call (fewest calls in flight, then least recently
  # used, affinity first), which queued calls a worker with room takes, and the
  # FIFO queue itself. No process, no clock: `Snakepit.Pool` owns the state and
  # does the sending.
  #
  # `workers` is the pool's map of worker pid => worker (see `worker/0`); a
  # call is the `Snakepit.Call` map (only `:ref`, `:method` and `:affinity` are
  # read here).
  #
  # Capacity. A worker runs `threads` sync calls at once and accepts
  # `max_inflight` calls at once (both from its `:ready` info); methods its
  # catalogue marks `async` run on its event loop and hold no thread. So a
  # worker takes a sync call while fewer than `threads` sync calls and fewer
  # than `max_inflight` calls are in flight on it, and an async call while
  # fewer than `max_inflight` are. A `--threads 1` worker thus never holds two
  # sync calls: a sync call never waits inside a busy Python process while
  # another worker could run it. Until a worker's capacity is known it takes
  # one call at a time.
  #
  # The pool's opt-in `:pipeline` (n >= 0) lets `n` more sync calls wait inside
  # a worker beyond its `threads` (`sync_max` = threads + pipeline, at most
  # max_inflight): the worker reads the next call while it answers one, which
  # is worth a lot of throughput for short calls, at the price of the
  # guarantee above.

  @type worker :: %{
          # the pool's own fields (served, limit, idempotent...) ride along
          optional(atom()) => term(),
          status: :ready | :down | :draining,
          inflight: %{optional(reference()) => :sync | :async},
          sync: non_neg_integer(),
          threads: pos_integer(),
          max_inflight: pos_integer(),
          pipeline: non_neg_integer(),
          sync_max: pos_integer(),
          async: MapSet.t(),
          last_used: integer(),
          models: MapSet.t()
        }
  @type workers :: %{optional(term()) => worker()}
  @type t :: :queue.queue(map())

  @doc """
  The routing fields of a worker the pool has just heard of: down, room for one
  call; `pipeline` applies once its capacity is known.
  """
  @spec new_worker(non_neg_integer()) :: worker()
  def new_worker(pipeline \\ 0) do
    %{
      status: :down,
      inflight: %{},
      sync: 0,
      threads: 1,
      max_inflight: 1,
      pipeline: pipeline,
      sync_max: 1,
      async: MapSet.new(),
      last_used: 0,
      models: MapSet.new()
    }
  end

  @doc """
  A worker's capacity from its `:ready` info (`threads`, `max_inflight`) and
  its catalogue (the names of the methods marked `async`). Missing or odd
  values leave room for one call.
  """
  @spec capacity(worker(), map(), [map()]) :: worker()
  def capacity(w, ready, methods) do
    threads = positive(ready[:threads])
    max_inflight = positive(ready[:max_inflight])
    async = for %{name: name, async: true} <- methods, into: MapSet.new(), do: name

    %{
      w
      | threads: threads,
        max_inflight: max_inflight,
        sync_max: min(threads + w.pipeline, max_inflight),
        async: async
    }
  end

  defp positive(n) when is_integer(n) and n > 0, do: n
  defp positive(_), do: 1

  @doc "Whether `method` runs as an async call on worker `w` (:async) or holds a thread (:sync)."
  @spec kind(worker(), String.t()) :: :sync | :async
  def kind(%{async: async}, method) do
    if MapSet.member?(async, method), do: :async, else: :sync
  end

  @doc "Whether ready worker `w` has room for `call` now."
  @spec room?(worker(), map()) :: boolean()
  def room?(%{status: :ready, inflight: inflight, max_inflight: max} = w, call)
      when map_size(inflight) < max,
      do: w.sync < w.sync_max or kind(w, call.method) == :async

  def room?(_w, _call), do: false

  @doc "Whether ready worker `w` has room for some call (a sync one, or an async one)."
  @spec room_for_any?(worker()) :: boolean()
  def room_for_any?(%{status: :ready, inflight: inflight, max_inflight: max} = w)
      when map_size(inflight) < max,
      do: w.sync < w.sync_max or MapSet.size(w.async) > 0

  def room_for_any?(_w), do: false

  @doc "Worker `w` with `call` (of `kind`) added to its calls in flight."
  @spec add(worker(), map(), :sync | :async) :: worker()
  def add(w, call, :sync),
    do: %{w | inflight: Map.put(w.inflight, call.ref, :sync), sync: w.sync + 1}

  def add(w, call, :async), do: %{w | inflight: Map.put(w.inflight, call.ref, :async)}

  @doc "Worker `w` without call `ref`: `{:ok, w}`, or `:error` if it was not in flight there."
  @spec remove(worker(), reference()) :: {:ok, worker()} | :error
  def remove(w, ref) do
    case Map.pop(w.inflight, ref) do
      {nil, _} -> :error
      {:sync, inflight} -> {:ok, %{w | inflight: inflight, sync: w.sync - 1}}
      {:async, inflight} -> {:ok, %{w | inflight: inflight}}
    end
  end

  @doc "An empty queue."
  @spec new() :: t()
  def new, do: :queue.new()

  @doc "Appends a call to the back of the queue."
  @spec push(t(), map()) :: t()
  def push(queue, call), do: :queue.in(call, queue)

  @doc "Puts a call back at the front of the queue (it was first in line)."
  @spec push_front(t(), map()) :: t()
  def push_front(queue, call), do: :queue.in_r(call, queue)

  @doc """
  Puts a call a worker handed back in front of every call that was never
  dispatched, behind the ones handed back before it: a worker hands its calls
  back in the order it was given them, so they stay in that order. The call is
  marked `requeued: true`.
  """
  @spec requeue(t(), map()) :: t()
  def requeue(queue, call) do
    call = Map.put(call, :requeued, true)
    {front, rest} = queue |> :queue.to_list() |> Enum.split_while(&Map.get(&1, :requeued, false))
    :queue.from_list(front ++ [call | rest])
  end

  @doc "How many calls wait."
  @spec size(t()) :: non_neg_integer()
  def size(queue), do: :queue.len(queue)

  @doc "The worker to take `call` now, or nil to queue it."
  @spec pick(map(), workers()) :: term() | nil
  def pick(%{affinity: nil} = call, workers), do: best(workers, call)

  def pick(%{affinity: key} = call, workers) do
    key = model_key(key)

    case Enum.filter(workers, fn {_, w} -> w.status == :ready and key in w.models end) do
      # a miss: the worker with the fewest models loaded (it has the most room)
      [] ->
        fewest_models(workers, call)

      holders ->
        # waited past :affinity_wait (see spill/1): any worker, if no holder has room
        best(holders, call) || if(Map.get(call, :spill, false), do: fewest_models(workers, call))
    end
  end

  @doc """
  Marks an affinity call that waited `:affinity_wait` for a busy holder of its
  key: from now on any worker may take it (a miss prefers the worker with the
  fewest models), so a hot model spreads to more workers instead of pinning one.
  """
  @spec spill(map()) :: map()
  def spill(call), do: Map.put(call, :spill, true)

  @doc """
  Like `best/2` among the workers with room, but the fewest models loaded
  first: a call whose key no worker holds goes where loading it evicts least.
  """
  @spec fewest_models(workers() | [{term(), worker()}], map()) :: term() | nil
  def fewest_models(workers, call),
    do: least(workers, call, &{map_size(&1.inflight), MapSet.size(&1.models), &1.last_used})

  @doc """
  The worker with room for `call` that has the fewest calls in flight, the one
  used longest ago among those; nil if none has room. `workers` is a map or a
  list of pairs.
  """
  @spec best(workers() | [{term(), worker()}], map()) :: term() | nil
  def best(workers, call), do: least(workers, call, &{map_size(&1.inflight), &1.last_used})

  # The worker with room for `call` whose `key` is the least; nil if none has
  # room. One pass, no intermediate lists: `best/2` runs for every call.
  defp least(workers, call, key) do
    {pid, _} =
      Enum.reduce(workers, {nil, nil}, fn {pid, w}, {_, best_key} = acc ->
        if room?(w, call) do
          k = key.(w)
          if best_key == nil or k < best_key, do: {pid, k}, else: acc
        else
          acc
        end
      end)

    pid
  end

  @doc """
  Whether worker `w` may take queued `call` as far as affinity goes: any worker
  may take a call without affinity; one with affinity waits for a live worker
  holding its key, and goes to anyone when there is none.
  """
  @spec eligible?(map(), map(), workers()) :: boolean()
  def eligible?(%{affinity: nil}, _w, _workers), do: true

  def eligible?(%{affinity: key} = call, w, workers) do
    key = model_key(key)

    key in w.models or Map.get(call, :spill, false) or
      not Enum.any?(workers, fn {_, o} -> o.status == :ready and key in o.models end)
  end

  @doc "Takes the first queued call that worker `w` has room for and may take: `{call, rest}`, or nil."
  @spec take(t(), worker(), workers()) :: {map(), t()} | nil
  def take(queue, w, workers),
    do: take_first(queue, &(room?(w, &1) and eligible?(&1, w, workers)))

  @doc "Removes the queued call with this ref: `{[call], rest}`, or `{[], queue}`."
  @spec cancel(t(), reference()) :: {[map()], t()}
  def cancel(queue, ref), do: split(queue, &(&1.ref == ref))

  @doc """
  Takes out the calls queued at or before `cutoff` (`queued_at`, the pool's
  microseconds): `{expired, rest, oldest}`, `oldest` the earliest `queued_at`
  left (nil for an empty queue). One pass, order kept.
  """
  @spec expire(t(), integer()) :: {[map()], t(), integer() | nil}
  def expire(queue, cutoff) do
    {expired, kept, oldest} =
      queue
      |> :queue.to_list()
      |> Enum.reduce({[], [], nil}, fn call, {expired, kept, oldest} ->
        if call.queued_at <= cutoff,
          do: {[call | expired], kept, oldest},
          else: {expired, [call | kept], min(oldest || call.queued_at, call.queued_at)}
      end)

    {Enum.reverse(expired), :queue.from_list(Enum.reverse(kept)), oldest}
  end

  @doc "The queued call with this ref changed by `fun`, in its place: `{call | nil, queue}`."
  @spec update(t(), reference(), (map() -> map())) :: {map() | nil, t()}
  def update(queue, ref, fun) do
    {list, found} =
      queue
      |> :queue.to_list()
      |> Enum.map_reduce(nil, fn
        %{ref: ^ref} = call, nil ->
          changed = fun.(call)
          {changed, changed}

        call, found ->
          {call, found}
      end)

    {found, if(found, do: :queue.from_list(list), else: queue)}
  end

  @doc "A set of affinity keys from a worker's report (atoms become strings)."
  @spec models(list()) :: MapSet.t()
  def models(keys), do: MapSet.new(keys, &model_key/1)

  @doc "An affinity key as reported models are kept: atoms as strings."
  @spec model_key(term()) :: term()
  def model_key(key) when is_binary(key), do: key
  def model_key(key) when is_atom(key), do: Atom.to_string(key)
  def model_key(key), do: key

  # The head is the usual answer: checked first, without copying the queue.
  defp take_first(queue, fun) do
    case :queue.out(queue) do
      {{:value, item}, rest} ->
        if fun.(item) do
          {item, rest}
        else
          case split(queue, fun) do
            {[item], rest} -> {item, rest}
            {[], _} -> nil
          end
        end

      {:empty, _} ->
        nil
    end
  end

  # Removes the first matching item: {[match], the others in order}, or
  # {[], queue} when none matches.
  defp split(queue, fun) do
    {before, from_match} = queue |> :queue.to_list() |> Enum.split_while(&(not fun.(&1)))

    case from_match do
      [] -> {[], queue}
      [match | after_match] -> {[match], :queue.from_list(before ++ after_match)}
    end
  end
end
