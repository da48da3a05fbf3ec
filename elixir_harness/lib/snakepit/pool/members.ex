defmodule Snakepit.Pool.Members do
  @moduledoc false
  # Which workers a pool should have, as pure functions over plain data: when
  # a worker is due for replacement (`:max_calls`, `:max_age`, with jitter),
  # which workers to retire and how many to start (recycling, reload, elastic
  # size), and whether to scale. `Snakepit.Pool` owns the state, the clock and
  # the supervisor calls.
  #
  # A worker here is the pool's map (see `Snakepit.Pool.Queue.worker/0`) with
  # also `retiring` (nil, or why it is being drained and stopped), `due` (nil,
  # or why it should be replaced), `born` (ms, when its process was ready) and
  # `inflight`.
  #
  # The rules, for a pool aiming at `target` workers:
  #
  #   * A due worker is replaced surge-first: one extra worker is started, and
  #     the due worker is retired (drained: it takes no new call, finishes its
  #     own, is stopped) only once the pool has `target` ready workers without
  #     it. So ready workers never drop below `target` because of a
  #     replacement, and at most one extra process runs (`target + 1`).
  #   * Due workers are replaced one at a time, oldest first.
  #   * Workers beyond what is wanted (after a scale-down, or more than asked
  #     for) are retired: those down first, then those with fewest calls in
  #     flight.

  @recycle_reasons [:max_calls, :max_age, :max_memory]

  @doc "Reasons for replacing a worker that count as recycling in stats."
  @spec recycle_reasons() :: [atom()]
  def recycle_reasons, do: @recycle_reasons

  @doc """
  A limit with jitter: `base` plus a random 0..`jitter` (nil base: no limit).
  gunicorn's `max_requests_jitter`: workers started together do not all
  reach their limit together.
  """
  @spec jittered(non_neg_integer() | nil, non_neg_integer()) :: non_neg_integer() | nil
  def jittered(nil, _jitter), do: nil
  def jittered(base, jitter) when jitter <= 0, do: base
  def jittered(base, jitter), do: base + :rand.uniform(jitter + 1) - 1

  @doc """
  The plan for `workers` (pid => worker), `pending` workers asked for and not
  yet seen, aiming at `target`: `{retire, start}`, `retire` a list of
  `{pid, reason}`, `start` how many workers to start.
  """
  @spec plan(map(), non_neg_integer(), pos_integer()) ::
          {[{term(), atom()}], non_neg_integer()}
  def plan(workers, pending, target) do
    active = for {pid, w} <- workers, w.retiring == nil, do: {pid, w}
    ready = Enum.count(active, fn {_, w} -> w.status == :ready end)

    due =
      active
      |> Enum.filter(fn {_, w} -> w.due != nil end)
      |> Enum.sort_by(fn {_, w} -> w.born || 0 end)

    # a due worker goes when the others ready are enough without it
    {retired, _ready} =
      Enum.reduce(due, {[], ready}, fn {pid, w}, {acc, ready} ->
        left = if w.status == :ready, do: ready - 1, else: ready

        if left >= target,
          do: {[{pid, w.due} | acc], left},
          else: {acc, ready}
      end)

    gone = MapSet.new(retired, &elem(&1, 0))
    active = Enum.reject(active, fn {pid, _} -> MapSet.member?(gone, pid) end)
    still_due? = Enum.any?(active, fn {_, w} -> w.due != nil end)
    want = if still_due?, do: target + 1, else: target
    have = length(active) + pending

    excess =
      if have > want do
        active
        |> Enum.sort_by(fn {_, w} ->
          {w.due == nil, w.status == :ready, map_size(w.inflight), w.born || 0}
        end)
        |> Enum.take(min(have - want, length(active)))
        |> Enum.map(fn {pid, w} -> {pid, w.due || :scale_down} end)
      else
        []
      end

    {Enum.reverse(retired) ++ excess, max(want - have, 0)}
  end

  @doc """
  Whether to scale at `now` (ms): `{:up, why}`, `{:down, pid, why}` or `:hold`.

  `s` holds `target`, `min`, `max`, `pending` (workers starting),
  `wait_ms` (the longest a call waited in the queue since the last look,
  or the oldest queued call's wait so far), `scale_up_wait`,
  `scale_down_idle`, `last_up` (ms of the last scale-up, or nil),
  `queued` (calls waiting), `peak_busy` (the most workers seen busy at once
  over the current window), `window_ms` (how long that window has run) and
  `idle` (a list of `{pid, idle_ms}` for ready workers with nothing in
  flight, longest idle first).

  Up on measured queue time, one worker at a time (none while one is
  starting). Down when, over a whole window of `scale_down_idle` ms, at least
  one worker was never needed (`peak_busy < target`) and no call waits: the
  worker idle longest goes. Calls are spread over all workers, so no single
  worker need sit idle for the pool to have one too many.

  No thrash: not down within `scale_down_idle` of the last scale-up, and a
  scale-down needs a full window of evidence, where a scale-up needs one slow
  call: the asymmetry is the hysteresis.
  """
  @spec scale(map(), integer()) :: {:up, String.t()} | {:down, term(), String.t()} | :hold
  def scale(s, now) do
    cond do
      s.target < s.max and s.pending == 0 and s.wait_ms > s.scale_up_wait ->
        {:up, "calls waited #{s.wait_ms} ms in the queue (scale_up_wait: #{s.scale_up_wait} ms)"}

      s.target > s.min and s.queued == 0 and s.window_ms >= s.scale_down_idle and
        s.peak_busy < s.target and (s.last_up == nil or now - s.last_up >= s.scale_down_idle) and
          s.idle != [] ->
        [{pid, _} | _] = s.idle

        {:down, pid,
         "at most #{s.peak_busy} of #{s.target} workers were busy for #{s.window_ms} ms " <>
           "(scale_down_idle: #{s.scale_down_idle} ms)"}

      true ->
        :hold
    end
  end
end
