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
  @pool_known [:name, :target, :size | @worker_keys]

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
    Keyword.put(opts, :size, size)
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
