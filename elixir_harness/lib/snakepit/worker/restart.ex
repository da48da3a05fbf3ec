defmodule Snakepit.Worker.Restart do
  @moduledoc false
  # When to start the next Python process after one ended: the crash-loop
  # policy, as a pure function of times (ms, monotonic) and options.
  #
  # A crash loop is a run of crashes of processes that were never stable (never
  # ready, or ready for less than :stable_after ms), each within
  # :restart_window of the one before. Its first crash restarts at once, the
  # next ones back off (200, 400, 800 ... ms, at most 5 s); any other crash
  # restarts at once.

  @backoff_max 5_000

  @doc """
  `{streak, delay_ms}` for a crash at `now`: the process was ready at
  `ready_at` (nil: never), the previous crash was at `last_crash_at` (nil:
  none), `streak` crashes in a row were early ones.
  """
  @spec next(
          integer(),
          integer() | nil,
          integer() | nil,
          non_neg_integer(),
          keyword()
        ) :: {pos_integer(), non_neg_integer()}
  def next(now, ready_at, last_crash_at, streak, opts) do
    stable? = ready_at != nil and now - ready_at >= opts[:stable_after]

    looping? =
      not stable? and last_crash_at != nil and now - last_crash_at < opts[:restart_window]

    streak = if looping?, do: streak + 1, else: 1
    {streak, backoff(streak)}
  end

  @doc "The delay before restarting after the `n`th early crash in a row: 0, then 200, 400, 800 ... ms."
  @spec backoff(pos_integer()) :: non_neg_integer()
  def backoff(1), do: 0
  def backoff(n), do: min(100 * Integer.pow(2, n - 1), @backoff_max)
end
