defmodule Snakepit.Pool.Tree do
  @moduledoc false
  # The pool's supervisor: the routing server first, then the workers it
  # starts with; workers added later (a replacement, a scale-up) are appended
  # with `start_worker/3` and removed with `stop_worker/2`. rest_for_one: if
  # the server restarts, the workers restart with it and announce themselves
  # again.
  #
  # `start_worker/3` and `stop_worker/2` block on the supervisor (stopping a
  # worker waits for its Python process to shut down), so the pool runs them
  # in a process of their own and hears back by message.
  use Supervisor

  alias Snakepit.Worker

  @impl true
  def init(opts) do
    opts = Snakepit.Pool.Cluster.prepare(opts)

    server = %{
      id: :server,
      start: {GenServer, :start_link, [Snakepit.Pool, {opts, self()}, [name: opts[:name]]]}
    }

    workers = for i <- 1..opts[:size], do: worker_spec(opts, i)
    # a distributed pool's :pg scope and cluster member come between (Pool.Cluster)
    children = [server | Snakepit.Pool.Cluster.children(opts)] ++ workers
    Supervisor.init(children, strategy: :rest_for_one)
  end

  @doc "The child spec of the pool's `n`th worker (`opts`: the pool's options)."
  @spec worker_spec(keyword(), pos_integer()) :: Supervisor.child_spec()
  def worker_spec(opts, n) do
    name = opts[:name]
    label = name |> inspect() |> String.trim_leading(":")
    worker_opts = Keyword.take(opts, [:target | Snakepit.Options.worker_keys()])

    Supervisor.child_spec(
      {Worker, [id: {Worker, n}, pool: name, worker_id: "#{label}-#{n}"] ++ worker_opts},
      id: {Worker, n}
    )
  end

  @doc "Starts worker `n` under `sup`, off the caller's process; `pool` hears `{:\"$snakepit_child\", :start_failed, reason}` if it cannot be."
  @spec start_worker(pid(), keyword(), pos_integer()) :: pid()
  def start_worker(sup, opts, n) do
    pool = self()

    spawn(fn ->
      result =
        try do
          Supervisor.start_child(sup, worker_spec(opts, n))
        catch
          :exit, reason -> {:error, reason}
        end

      case result do
        {:ok, _pid} -> :ok
        other -> send(pool, {:"$snakepit_child", :start_failed, other})
      end
    end)
  end

  @doc "Stops the worker GenServer `pid` (gracefully) and forgets its child spec, off the caller's process."
  @spec stop_worker(pid(), pid()) :: pid()
  def stop_worker(sup, pid) do
    # (an exit: the pool is stopping, and the supervisor stops the worker itself)
    detached(fn ->
      case Enum.find(Supervisor.which_children(sup), &match?({_, ^pid, _, _}, &1)) do
        {id, _, _, _} ->
          Supervisor.terminate_child(sup, id)
          Supervisor.delete_child(sup, id)

        nil ->
          :ok
      end
    end)
  end

  @doc "Counts the worker children of `sup`, off the caller's process; `pool` hears `{:\"$snakepit_census\", count, highest_n}`."
  @spec census(pid()) :: pid()
  def census(sup) do
    pool = self()

    detached(fn ->
      ns = for {{Worker, n}, pid, _, _} <- Supervisor.which_children(sup), is_pid(pid), do: n
      send(pool, {:"$snakepit_census", length(ns), Enum.max(ns, fn -> 0 end)})
    end)
  end

  @doc """
  Runs `fun` in a process of its own, so the pool never waits on a supervisor
  or a worker; an exit in it (what it asked went away meanwhile) ends it quietly.
  """
  @spec detached((() -> any())) :: pid()
  def detached(fun) do
    spawn(fn ->
      try do
        fun.()
      catch
        :exit, _ -> :ok
      end
    end)
  end
end
