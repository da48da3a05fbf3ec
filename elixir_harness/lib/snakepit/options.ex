defmodule Snakepit.Options do
  @moduledoc false
  # The options of `Snakepit.Worker.start_link/1` and `Snakepit.Pool.start_link/1`,
  # checked once, here, before any process starts: an `ArgumentError` whose
  # message ends with `got: ...`. The options themselves are documented in
  # those modules.

  # What a pool passes on to each of its workers (besides :target).
  @worker_keys [
    :python,
    :worker_opts,
    :worker_args,
    :start_timeout,
    :shutdown_grace,
    :cancel_grace,
    :health_interval,
    :hung_after,
    :stable_after,
    :output,
    :restart_window,
    :cd,
    :env,
    :beam_functions
  ]

  @worker_known [:target, :worker_id, :name, :pool, :id | @worker_keys]
  # The pool's own options (docs/pool.md), with their defaults; nil: off.
  @pool_defaults [
    max_queue: 5_000,
    queue_timeout: :infinity,
    max_calls: nil,
    max_calls_jitter: nil,
    max_age: nil,
    max_age_jitter: nil,
    max_memory_mb: nil,
    min_size: nil,
    max_size: nil,
    scale_up_wait: 100,
    scale_down_idle: 30_000,
    affinity_wait: :infinity,
    circuit_breaker: nil,
    events: [],
    distributed: false,
    gossip_interval: 200
  ]

  @pool_known [:name, :target, :size | Keyword.keys(@pool_defaults) ++ @worker_keys]

  @defaults [
    start_timeout: 10_000,
    shutdown_grace: 2_000,
    cancel_grace: 5_000,
    health_interval: 5_000,
    hung_after: 3,
    stable_after: 500,
    restart_window: 10_000
  ]

  @doc "The options a pool hands to each of its workers, besides `:target`."
  @spec worker_keys() :: [atom()]
  def worker_keys, do: @worker_keys

  @doc "The default of a worker option that has one."
  @spec default(atom()) :: term()
  def default(key), do: Keyword.fetch!(@defaults, key)

  @doc """
  Checks a worker's options and fills in the defaults (and the Python to run).
  Raises `ArgumentError`.
  """
  @spec worker!(term()) :: keyword()
  def worker!(opts) do
    keyword!(opts)
    known!(opts, @worker_known, "worker")
    check_worker!(opts)

    @defaults
    |> Keyword.merge(opts)
    |> Keyword.put(:python, Snakepit.OSProcess.python(opts[:python]))
    |> Keyword.put(:output, Keyword.get(opts, :output, :capture))
    |> Keyword.put(:worker_opts, Keyword.get(opts, :worker_opts, []))
    |> Keyword.put(:worker_args, Keyword.get(opts, :worker_args, []))
  end

  @doc """
  Checks a pool's options, its workers' included, and fills in `:size`; the
  workers fill in their own defaults when they start. Raises `ArgumentError`.
  """
  @spec pool!(term()) :: keyword()
  def pool!(opts) do
    keyword!(opts)
    known!(opts, @pool_known, "pool")
    name = opts[:name]

    unless is_atom(name) and name not in [nil, true, false],
      do: raise(ArgumentError, ":name must be an atom, got: #{inspect(name)}")

    size = Keyword.get(opts, :size, System.schedulers_online())

    unless is_integer(size) and size > 0,
      do: raise(ArgumentError, ":size must be a positive integer, got: #{inspect(size)}")

    # the workers' own options fail here, not inside the supervisor
    check_worker!(opts)
    check_pool!(opts)
    {lo, hi} = {opts[:min_size], opts[:max_size]}
    # without :size, the default clamped to the bounds
    size = Keyword.get(opts, :size, max(lo || 1, min(hi || size, size)))

    unless (lo == nil or lo <= size) and (hi == nil or size <= hi),
      do:
        raise(
          ArgumentError,
          ":min_size <= :size <= :max_size must hold, got: " <>
            inspect(min_size: lo, size: size, max_size: hi)
        )

    Keyword.put(opts, :size, size)
  end

  @doc """
  The pool's own settings (`:max_queue`, `:circuit_breaker`, ...) as a map,
  defaults filled in from `opts` (checked by `pool!/1`): sizes default to
  `:size`, jitters to a tenth of their limit.
  """
  @spec pool_config(keyword()) :: map()
  def pool_config(opts) do
    cfg = Map.new(@pool_defaults, fn {k, v} -> {k, Keyword.get(opts, k, v)} end)
    size = opts[:size]

    %{
      cfg
      | min_size: cfg.min_size || size,
        max_size: cfg.max_size || size,
        max_calls_jitter: cfg.max_calls_jitter || div(cfg.max_calls || 0, 10),
        max_age_jitter: cfg.max_age_jitter || div(cfg.max_age || 0, 10),
        circuit_breaker:
          if(cfg.circuit_breaker, do: Keyword.merge([per_method: false], cfg.circuit_breaker)),
        events: List.wrap(cfg.events)
    }
  end

  defp check_pool!(opts) do
    check!(opts, :max_queue, 0, [:infinity], "a non-negative integer or :infinity")

    for key <- [:queue_timeout, :affinity_wait],
        do: check!(opts, key, 0, [:infinity], "a non-negative integer or :infinity")

    for key <- [:max_calls, :max_age, :max_memory_mb, :min_size, :max_size],
        do: check!(opts, key, 1, [nil], "a positive integer or nil")

    for key <- [:max_calls_jitter, :max_age_jitter],
        do: check!(opts, key, 0, [nil], "a non-negative integer or nil")

    check!(opts, :scale_up_wait, 0, [], "a non-negative integer")
    check!(opts, :scale_down_idle, 1, [], "a positive integer")

    case Keyword.get(opts, :circuit_breaker) do
      nil ->
        :ok

      cb when is_list(cb) ->
        unless Keyword.keyword?(cb) and
                 Keyword.keys(cb) -- [:threshold, :window, :cooldown, :per_method] == [],
               do:
                 raise(
                   ArgumentError,
                   ":circuit_breaker takes threshold:, window:, cooldown:, per_method:, got: #{inspect(cb)}"
                 )

        for key <- [:threshold, :window, :cooldown],
            do: check!(cb, key, 1, [], "a positive integer (in :circuit_breaker)")

        unless Keyword.get(cb, :per_method, false) in [true, false],
          do:
            raise(
              ArgumentError,
              ":per_method must be a boolean, got: #{inspect(cb[:per_method])}"
            )

      other ->
        raise ArgumentError,
              ":circuit_breaker must be a keyword list like [threshold: 5, window: 10_000, cooldown: 5_000], got: #{inspect(other)}"
    end

    distributed = Keyword.get(opts, :distributed, false)

    unless is_boolean(distributed),
      do: raise(ArgumentError, ":distributed must be a boolean, got: #{inspect(distributed)}")

    check!(opts, :gossip_interval, 1, [], "a positive integer")

    events = Keyword.get(opts, :events, [])

    unless Enum.all?(List.wrap(events), &(is_pid(&1) or is_atom(&1))),
      do:
        raise(
          ArgumentError,
          ":events must be a pid, a name or a list of them, got: #{inspect(events)}"
        )

    :ok
  end

  defp keyword!(opts) do
    unless Keyword.keyword?(opts),
      do: raise(ArgumentError, "expected a keyword list of options, got: #{inspect(opts)}")
  end

  defp known!(opts, known, what) do
    case Keyword.keys(opts) -- known do
      [] -> :ok
      bad -> raise ArgumentError, "unknown #{what} options #{inspect(bad)}, got: #{inspect(opts)}"
    end
  end

  defp check_worker!(opts) do
    target = opts[:target]

    unless is_binary(target) and target != "",
      do: raise(ArgumentError, ":target must be a path or module string, got: #{inspect(target)}")

    worker_opts = Keyword.get(opts, :worker_opts, [])

    unless Keyword.keyword?(worker_opts),
      do:
        raise(ArgumentError, ":worker_opts must be a keyword list, got: #{inspect(worker_opts)}")

    worker_args = Keyword.get(opts, :worker_args, [])

    unless is_list(worker_args) and Enum.all?(worker_args, &is_binary/1),
      do:
        raise(
          ArgumentError,
          ":worker_args must be a list of strings, got: #{inspect(worker_args)}"
        )

    fns = Keyword.get(opts, :beam_functions, %{})

    unless is_map(fns) and Enum.all?(fns, fn {k, v} -> is_binary(k) and is_function(v) end),
      do:
        raise(
          ArgumentError,
          ":beam_functions must be a map of names (strings) to functions, got: #{inspect(fns)}"
        )

    output = Keyword.get(opts, :output, :capture)

    unless output in [:capture, :inherit],
      do: raise(ArgumentError, ":output must be :capture or :inherit, got: #{inspect(output)}")

    for key <- [:start_timeout, :shutdown_grace, :restart_window, :stable_after] do
      check!(opts, key, 0, [], "a non-negative integer")
    end

    check!(opts, :hung_after, 1, [], "a positive integer")
    check!(opts, :health_interval, 1, [nil], "a positive integer or nil")
    check!(opts, :cancel_grace, 0, [:infinity], "a non-negative integer or :infinity")
    :ok
  end

  # Absent, or an integer >= min, or one of the other values allowed.
  defp check!(opts, key, min, others, what) do
    case Keyword.fetch(opts, key) do
      :error ->
        :ok

      {:ok, value} when is_integer(value) and value >= min ->
        :ok

      {:ok, value} ->
        unless value in others,
          do: raise(ArgumentError, "#{inspect(key)} must be #{what}, got: #{inspect(value)}")
    end
  end
end
