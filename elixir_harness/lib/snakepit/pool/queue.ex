defmodule Snakepit.Pool.Queue do
  @moduledoc false
  # The pool's routing decisions, as pure functions over plain data: which
  # idle worker takes a call (least recently used, affinity first), which
  # queued call an idle worker takes, and the FIFO queue itself. No process,
  # no clock: `Snakepit.Pool` owns the state and does the sending.
  #
  # `workers` is the pool's map of worker pid => %{status: :idle | :busy |
  # :down, last_used: integer, models: MapSet of keys, ...}; a call is the
  # `Snakepit.Call` map (only `:ref` and `:affinity` are read here).

  @type workers :: %{
          optional(term()) => %{status: atom(), last_used: integer(), models: MapSet.t()}
        }
  @type t :: :queue.queue(map())

  @doc "An empty queue."
  @spec new() :: t()
  def new, do: :queue.new()

  @doc "Appends a call to the back of the queue."
  @spec push(t(), map()) :: t()
  def push(queue, call), do: :queue.in(call, queue)

  @doc "Puts a call back at the front of the queue (it was first in line)."
  @spec push_front(t(), map()) :: t()
  def push_front(queue, call), do: :queue.in_r(call, queue)

  @doc "How many calls wait."
  @spec size(t()) :: non_neg_integer()
  def size(queue), do: :queue.len(queue)

  @doc "The idle worker to take `call` now, or nil to queue it."
  @spec pick(map(), workers()) :: term() | nil
  def pick(%{affinity: nil}, workers), do: least_recently_used(workers)

  def pick(%{affinity: key}, workers) do
    key = model_key(key)

    case Enum.filter(workers, fn {_, w} -> w.status != :down and key in w.models end) do
      [] -> least_recently_used(workers)
      holders -> least_recently_used(holders)
    end
  end

  @doc "The idle worker used longest ago, or nil; `workers` is a map or a list of pairs."
  @spec least_recently_used(workers() | [{term(), map()}]) :: term() | nil
  # One pass, no intermediate lists: this runs for every call.
  def least_recently_used(workers) do
    {pid, _} =
      Enum.reduce(workers, {nil, nil}, fn
        {pid, %{status: :idle, last_used: used}}, {best, best_used}
        when best == nil or used < best_used ->
          {pid, used}

        _, acc ->
          acc
      end)

    pid
  end

  @doc """
  Whether worker `w` may take queued `call`: any worker may take a call without
  affinity; one with affinity waits for a live worker holding its key, and
  goes to anyone when there is none.
  """
  @spec eligible?(map(), map(), workers()) :: boolean()
  def eligible?(%{affinity: nil}, _w, _workers), do: true

  def eligible?(%{affinity: key}, w, workers) do
    key = model_key(key)

    key in w.models or
      not Enum.any?(workers, fn {_, o} -> o.status != :down and key in o.models end)
  end

  @doc "Takes the first queued call that worker `w` may take: `{call, rest}`, or nil."
  @spec take(t(), map(), workers()) :: {map(), t()} | nil
  def take(queue, w, workers), do: take_first(queue, &eligible?(&1, w, workers))

  @doc "Removes the queued call with this ref: `{[call], rest}`, or `{[], queue}`."
  @spec cancel(t(), reference()) :: {[map()], t()}
  def cancel(queue, ref), do: split(queue, &(&1.ref == ref))

  @doc "The idle workers, least recently used first: the order to hand them queued calls."
  @spec serve_order(workers()) :: [term()]
  def serve_order(workers) do
    workers
    |> Enum.filter(fn {_, w} -> w.status == :idle end)
    |> Enum.sort_by(fn {_, w} -> w.last_used end)
    |> Enum.map(fn {pid, _} -> pid end)
  end

  @doc "A set of affinity keys from a worker's report (atoms become strings)."
  @spec models(list()) :: MapSet.t()
  def models(keys), do: MapSet.new(keys, &model_key/1)

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

  defp model_key(key) when is_binary(key), do: key
  defp model_key(key) when is_atom(key), do: Atom.to_string(key)
  defp model_key(key), do: key
end
