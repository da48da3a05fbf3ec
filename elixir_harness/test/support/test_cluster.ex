defmodule Snakepit.TestCluster do
  @moduledoc false
  # Real distributed Erlang for the distributed-pool tests: this node made
  # distributed (short names, loopback), peer nodes started with OTP's `:peer`
  # on this machine with this node's code paths, and pools started on them.

  @doc """
  Makes this node distributed (starting `epmd -daemon` first): `{:ok,
  started?}`, or `{:error, reason}` when distribution cannot start here.
  """
  @spec start_distribution() :: {:ok, boolean()} | {:error, String.t()}
  def start_distribution do
    if Node.alive?() do
      {:ok, false}
    else
      with :ok <- epmd() do
        name = :"snakepit_test_#{System.unique_integer([:positive])}"

        case Node.start(name, :shortnames) do
          {:ok, _} -> {:ok, true}
          {:error, reason} -> {:error, "Node.start/2 failed: #{inspect(reason)}"}
        end
      end
    end
  end

  defp epmd do
    case System.find_executable("epmd") || erts_epmd() do
      nil ->
        {:error, "no epmd executable found"}

      epmd ->
        case System.cmd(epmd, ["-daemon"], stderr_to_stdout: true) do
          {_, 0} -> :ok
          {out, status} -> {:error, "epmd -daemon exited with #{status}: #{out}"}
        end
    end
  end

  defp erts_epmd do
    path = Path.join([:code.root_dir(), "erts-#{:erlang.system_info(:version)}", "bin", "epmd"])
    if File.exists?(path), do: path
  end

  @doc """
  Whether distributed tests can run here: distribution is started and
  stopped again to find out. `:ok` or `{:error, reason}`.
  """
  @spec probe() :: :ok | {:error, String.t()}
  def probe do
    case start_distribution() do
      {:ok, true} -> Node.stop()
      {:ok, false} -> :ok
      error -> error
    end
  end

  @doc "Starts a peer node with this node's code paths and the harness's application; `{peer, node}`."
  @spec start_peer(String.t()) :: {pid(), node()}
  def start_peer(prefix) do
    name = :"#{prefix}_#{System.unique_integer([:positive])}"
    {:ok, peer, node} = :peer.start(%{name: name, wait_boot: 30_000})
    :ok = :erpc.call(node, :code, :add_pathsz, [:code.get_path()])
    app = Application.get_application(Snakepit.Pool)
    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [app])
    :ok = :erpc.call(node, Logger, :configure, [[level: :error]])
    {peer, node}
  end

  @doc "Starts a pool on `node`, owned by no process of the caller's (it lives until stopped)."
  @spec start_pool(node(), keyword()) :: :ok
  def start_pool(node, opts) do
    {:ok, _sup} = :erpc.call(node, __MODULE__, :start_pool_here, [opts], 60_000)
    :ok
  end

  @doc false
  def start_pool_here(opts) do
    with {:ok, sup} <- Snakepit.Pool.start_link(opts) do
      # the :erpc process that ran this exits next: the pool must not go with it
      Process.unlink(sup)
      {:ok, sup}
    end
  end
end
