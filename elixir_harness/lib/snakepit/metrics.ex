defmodule Snakepit.Metrics do
  @moduledoc """
  One Prometheus endpoint per BEAM node, on OTP's own `:inets` HTTP server.

      children = [
        {Snakepit.Pool, name: :ml, target: "ml_worker.py", size: 4},
        {Snakepit.Metrics, port: 9568}
      ]

  serves `GET /metrics` in the text exposition format:

    * the pools' own metrics: `snakepit_pool_queue_depth{pool}`,
      `snakepit_pool_workers{pool,state}` (read from `Snakepit.Pool.stats/1`
      at scrape time), `snakepit_pool_queue_wait_seconds{pool}` and
      `snakepit_pool_call_duration_seconds{pool,method,outcome}` (histograms
      of the `[:snakepit, :call, :stop | :exception]` events),
      `snakepit_worker_restarts_total{pool,reason}`;
    * the Python workers' own metrics, from the `"metrics"` of their health
      reports (polled every `:health_interval`), summed by pool: labelled by
      pool, never by worker pid, so series do not churn when workers
      restart. A worker's counts survive its Python process: what it had
      counted at its last poll is kept when the process ends (calls after
      that poll are lost with it).

  Names, units, labels and PromQL: `docs/observability.md`.

  Options: `:port` (default 9568; 0 picks a free one, see `port/1`), `:ip`
  (default `{127, 0, 0, 1}`: loopback; `{0, 0, 0, 0}` for a scraper on
  another host), `:pools` (`:all`, the default: every running
  `Snakepit.Pool`; or a list of names), `:name` (default `Snakepit.Metrics`).
  One per node: the counts live in a named ETS table.
  """

  use GenServer

  alias Snakepit.Metrics.{Exposition, Store}

  @on {__MODULE__, :on}

  @doc false
  def child_spec(opts) do
    %{id: Keyword.get(opts, :name, __MODULE__), start: {__MODULE__, :start_link, [opts]}}
  end

  @doc "Starts the endpoint (see the module doc for options)."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    unless Keyword.keyword?(opts),
      do: raise(ArgumentError, "expected a keyword list, got: #{inspect(opts)}")

    GenServer.start_link(__MODULE__, opts, name: Keyword.get(opts, :name, __MODULE__))
  end

  @doc "The port the endpoint listens on."
  @spec port(GenServer.server()) :: :inet.port_number()
  def port(server \\ __MODULE__), do: GenServer.call(server, :port)

  @doc "The exposition text, as a scrape would get it."
  @spec scrape(GenServer.server()) :: String.t()
  def scrape(server \\ __MODULE__), do: GenServer.call(server, :scrape, 30_000)

  # ------------------------------------------------------------ server
  #
  # The counting happens in the processes that count (`Snakepit.Metrics.Store`,
  # called from `Snakepit.Telemetry` and the workers); this process owns the
  # table and the HTTP server (`Snakepit.Metrics.Handler`), and a scrape
  # renders `Snakepit.Metrics.Exposition`'s text in the HTTP server's process.

  @impl true
  def init(opts) do
    port = Keyword.get(opts, :port, 9568)
    ip = Keyword.get(opts, :ip, {127, 0, 0, 1})
    pools = Keyword.get(opts, :pools, :all)

    unless is_integer(port) and port in 0..65_535,
      do: raise(ArgumentError, ":port must be 0..65535, got: #{inspect(port)}")

    {:ok, _} = Application.ensure_all_started(:inets)
    Store.create()
    :persistent_term.put({__MODULE__, :config}, %{pools: pools, server: self()})
    :persistent_term.put(@on, true)
    root = String.to_charlist(System.tmp_dir!())

    {:ok, httpd} =
      :inets.start(:httpd,
        port: port,
        bind_address: ip,
        server_name: ~c"snakepit_metrics",
        server_root: root,
        document_root: root,
        modules: [Snakepit.Metrics.Handler]
      )

    [port: bound] = :httpd.info(httpd, [:port])
    {:ok, %{httpd: httpd, port: bound, pools: pools}}
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, state.port, state}
  def handle_call(:scrape, _from, state), do: {:reply, Exposition.text(state.pools), state}

  @impl true
  def handle_cast({:retire, pool, counts}, state) do
    Store.retire(pool, counts)
    {:noreply, state}
  end

  @impl true
  def terminate(_reason, state) do
    :persistent_term.put(@on, false)
    :inets.stop(:httpd, state.httpd)
  end

  @doc false
  # The handler's way in: the text for the configured pools.
  def exposition_now do
    %{pools: pools} = :persistent_term.get({__MODULE__, :config})
    Exposition.text(pools)
  end
end
