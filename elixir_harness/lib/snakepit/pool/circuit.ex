defmodule Snakepit.Pool.Circuit do
  @moduledoc false
  # A circuit breaker as pure functions over a map (times in ms, monotonic;
  # the pool reads the clock and passes it in).
  #
  #   :closed    calls go through; infrastructure failures (a crash, a hang,
  #              a start failure, a timeout) are counted, and `threshold` of
  #              them within `window` ms open the circuit
  #   :open      calls fail at once with :circuit_open, for `cooldown` ms
  #   :half_open the cooldown is over: the next call goes through as the probe,
  #              the others still fail fast; the probe's success closes the
  #              circuit, its infrastructure failure (or any other one) opens
  #              it again for another cooldown
  #
  # A user exception is a success here: the Python side ran the code and
  # answered. A probe that ends neither way (cancelled by its caller, handed
  # back by a worker that went down before running it) leaves the circuit half
  # open for the next call to probe.

  @type state :: :closed | :open | :half_open
  @type t :: %{
          state: state(),
          threshold: pos_integer(),
          window: pos_integer(),
          cooldown: pos_integer(),
          failures: [integer()],
          opened_at: integer() | nil,
          probe: reference() | nil,
          trips: non_neg_integer()
        }

  @defaults [threshold: 5, window: 10_000, cooldown: 5_000]

  @doc "The options' defaults: `threshold: 5, window: 10_000, cooldown: 5_000` (ms)."
  @spec defaults() :: keyword()
  def defaults, do: @defaults

  @doc "A closed circuit with these (validated) options."
  @spec new(keyword()) :: t()
  def new(opts) do
    opts = Keyword.merge(@defaults, opts)

    %{
      state: :closed,
      threshold: opts[:threshold],
      window: opts[:window],
      cooldown: opts[:cooldown],
      failures: [],
      opened_at: nil,
      probe: nil,
      trips: 0
    }
  end

  @doc """
  May a call go through at `now`? `{:ok, c}`; `{:probe, c}` (it goes through
  as the half-open circuit's probe: tell `probe/2` its ref); or
  `{:open, retry_in_ms}`.
  """
  @spec check(t(), integer()) :: {:ok, t()} | {:probe, t()} | {:open, non_neg_integer()}
  def check(%{state: :closed} = c, _now), do: {:ok, c}

  def check(%{state: :open} = c, now) do
    left = c.opened_at + c.cooldown - now
    if left <= 0, do: check(%{c | state: :half_open, probe: nil}, now), else: {:open, left}
  end

  def check(%{state: :half_open, probe: nil} = c, _now), do: {:probe, c}
  def check(%{state: :half_open}, _now), do: {:open, 0}

  @doc "Remembers `ref` as the half-open circuit's probe."
  @spec probe(t(), reference()) :: t()
  def probe(c, ref), do: %{c | probe: ref}

  @doc "An infrastructure failure at `now` (of call `ref`, if it is one)."
  @spec failure(t(), integer()) :: t()
  def failure(%{state: :closed} = c, now) do
    failures = [now | Enum.filter(c.failures, &(&1 > now - c.window))]

    if length(failures) >= c.threshold,
      do: open(c, now),
      else: %{c | failures: failures}
  end

  def failure(%{state: :half_open} = c, now), do: open(c, now)
  def failure(%{state: :open} = c, _now), do: c

  @doc "Call `ref` succeeded (or raised in user code): a half-open circuit it probed closes."
  @spec success(t(), reference()) :: t()
  def success(%{state: :half_open, probe: ref} = c, ref),
    do: %{c | state: :closed, failures: [], opened_at: nil, probe: nil}

  def success(c, _ref), do: c

  @doc "Call `ref` ended neither way: if it was the probe, the next call probes."
  @spec release(t(), reference()) :: t()
  def release(%{probe: ref} = c, ref), do: %{c | probe: nil}
  def release(c, _ref), do: c

  @doc "The state as stats show it at `now` (an open circuit past its cooldown is :half_open)."
  @spec state(t(), integer()) :: state()
  def state(%{state: :open} = c, now),
    do: if(now >= c.opened_at + c.cooldown, do: :half_open, else: :open)

  def state(c, _now), do: c.state

  defp open(c, now),
    do: %{c | state: :open, opened_at: now, failures: [], probe: nil, trips: c.trips + 1}
end
