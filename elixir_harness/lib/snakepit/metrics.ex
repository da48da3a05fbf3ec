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

  @table :snakepit_metrics
  @on {__MODULE__, :on}
  # Exposed histogram bounds: 2**k ns for these k (~1 us to ~275 s, a factor of 4 apart),
  # as the Python endpoint does: counts are kept by the duration's bit length.
  @bounds Enum.take_every(10..38, 2)
  @zeros List.duplicate(0, 64)

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

  # ------------------------------------------------------------ recording

  @doc false
  # From Snakepit.Telemetry.execute/3: counts the events the endpoint serves.
  def observe(event, measurements, metadata) do
    if :persistent_term.get(@on, false), do: record(event, measurements, metadata)
    :ok
  end

  defp record([:snakepit, :call, end_], m, meta) when end_ in [:stop, :exception] do
    pool = label(meta.pool)
    hist({:pool_call_duration, pool, to_string(meta.method), to_string(meta.outcome)}, m.duration)
    hist({:pool_queue_wait, pool}, m.queue_time)
  end

  defp record([:snakepit, :worker, :restarted], _m, meta),
    do: count({:restarts, label(meta.pool), to_string(meta.reason)})

  defp record(_event, _m, _meta), do: :ok

  defp hist(key, native) do
    ns = max(System.convert_time_unit(native, :native, :nanosecond), 0)
    key = {:h, key}
    :ets.update_counter(@table, key, [{2, ns}, {3 + min(bits(ns), 63), 1}], hist_row(key))
  rescue
    ArgumentError -> :ok
  end

  defp hist_row(key), do: List.to_tuple([key, 0 | @zeros])

  defp count(key) do
    :ets.update_counter(@table, {:c, key}, {2, 1}, {{:c, key}, 0})
  rescue
    ArgumentError -> :ok
  end

  defp bits(0), do: 0
  defp bits(n), do: bits(Bitwise.bsr(n, 1)) + 1

  @doc false
  # A worker's health report carried `metrics` (its Python process's counts so far).
  def worker_report(pool, metrics) when is_map(metrics) do
    if :persistent_term.get(@on, false) do
      base =
        case :ets.lookup(@table, {:py, self()}) do
          [{_, _pool, base, _current}] -> base
          [] -> %{}
        end

      :ets.insert(@table, {{:py, self()}, pool, base, metrics})
    end

    :ok
  rescue
    ArgumentError -> :ok
  end

  def worker_report(_pool, _metrics), do: :ok

  @doc false
  # The worker's Python process ended: what it counted is kept; its gauges go.
  def python_ended do
    if :persistent_term.get(@on, false) do
      case :ets.lookup(@table, {:py, self()}) do
        [{key, pool, base, current}] when is_map(current) ->
          :ets.insert(@table, {key, pool, add(base, counters(current)), nil})

        _ ->
          :ok
      end
    end

    :ok
  rescue
    ArgumentError -> :ok
  end

  @doc false
  # The worker itself stops: its counts go to its pool's, so the sums never go down.
  def worker_stopped do
    if :persistent_term.get(@on, false) do
      case :ets.take(@table, {:py, self()}) do
        [{_key, pool, base, current}] ->
          GenServer.cast(__MODULE__, {:retire, pool, add(base, counters(current || %{}))})

        [] ->
          :ok
      end
    end

    :ok
  rescue
    ArgumentError -> :ok
  end

  # ------------------------------------------------------------ server

  @impl true
  def init(opts) do
    port = Keyword.get(opts, :port, 9568)
    ip = Keyword.get(opts, :ip, {127, 0, 0, 1})
    pools = Keyword.get(opts, :pools, :all)

    unless is_integer(port) and port in 0..65_535,
      do: raise(ArgumentError, ":port must be 0..65535, got: #{inspect(port)}")

    {:ok, _} = Application.ensure_all_started(:inets)
    :ets.new(@table, [:named_table, :public, :set, write_concurrency: true])
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
  def handle_call(:scrape, _from, state), do: {:reply, exposition(state.pools), state}

  @impl true
  def handle_cast({:retire, pool, counts}, state) do
    key = {:retired, pool}

    old =
      case :ets.lookup(@table, key) do
        [{_, old}] -> old
        [] -> %{}
      end

    :ets.insert(@table, {key, add(old, counts)})
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
    exposition(pools)
  end

  # ------------------------------------------------------------ exposition

  @doc false
  def exposition(which) do
    pools = pools(which)
    stats = for name <- pools, s = stats(name), s != nil, do: {label(name), s}
    rows = :ets.tab2list(@table)

    IO.iodata_to_binary([
      pool_families(stats, rows),
      python_families(python_by_pool(rows))
    ])
  end

  defp pools(:all) do
    for name <- Process.registered(),
        pid = Process.whereis(name),
        pid != nil,
        initial_call(pid) == {Snakepit.Pool, :init, 1},
        do: name
  end

  defp pools(names) when is_list(names), do: names

  defp initial_call(pid) do
    case Process.info(pid, :dictionary) do
      {:dictionary, dict} -> Keyword.get(dict, :"$initial_call")
      nil -> nil
    end
  end

  defp stats(name) do
    Snakepit.Pool.stats(name)
  catch
    :exit, _ -> nil
  end

  defp pool_families(stats, rows) do
    [
      family(
        "snakepit_pool_queue_depth",
        "gauge",
        "Calls waiting in the pool's queue.",
        for({pool, s} <- stats, do: {[pool: pool], s.queue_depth})
      ),
      family(
        "snakepit_pool_workers",
        "gauge",
        "Workers of the pool, by state.",
        for(
          {pool, s} <- stats,
          state <- [:idle, :busy, :draining, :down],
          do: {[pool: pool, state: state], Map.get(s, state, 0)}
        )
      ),
      histogram_family(
        "snakepit_pool_queue_wait_seconds",
        "Time calls waited in the pool's queue before being sent to a worker.",
        for(
          {{:h, {:pool_queue_wait, pool}}, sum, buckets} <- hist_rows(rows),
          do: {[pool: pool], sum, buckets}
        )
      ),
      histogram_family(
        "snakepit_pool_call_duration_seconds",
        "Time from a call being sent to a Python process to its end, by outcome.",
        for(
          {{:h, {:pool_call_duration, pool, method, outcome}}, sum, buckets} <- hist_rows(rows),
          do: {[pool: pool, method: method, outcome: outcome], sum, buckets}
        )
      ),
      family(
        "snakepit_worker_restarts_total",
        "counter",
        "Python processes restarted, by the error that ended the previous one.",
        for({{:c, {:restarts, pool, reason}}, n} <- rows, do: {[pool: pool, reason: reason], n})
      )
    ]
  end

  defp hist_rows(rows) do
    for row <- rows, is_tuple(row), tuple_size(row) == 66 do
      [key, sum | buckets] = Tuple.to_list(row)

      {key, sum,
       buckets
       |> Enum.with_index()
       |> Enum.filter(fn {n, _} -> n > 0 end)
       |> Map.new(fn {n, k} -> {k, n} end)}
    end
  end

  # pool label => {counters summed (live, ended and retired), gauges of live processes}
  defp python_by_pool(rows) do
    Enum.reduce(rows, %{}, fn
      {{:py, _pid}, pool, base, current}, acc ->
        counts = add(base, counters(current || %{}))
        gauges = gauges(current)

        Map.update(acc, label(pool), {counts, gauges}, fn {c, g} ->
          {add(c, counts), add(g, gauges)}
        end)

      {{:retired, pool}, counts}, acc ->
        Map.update(acc, label(pool), {counts, %{}}, fn {c, g} -> {add(c, counts), g} end)

      _, acc ->
        acc
    end)
  end

  defp python_families(by_pool) do
    pools = Enum.sort(by_pool)

    per = fn fun -> for {pool, {c, g}} <- pools, item <- fun.(pool, c, g), do: item end

    [
      family(
        "snakepit_calls_total",
        "counter",
        "Calls the Python workers answered, by method and outcome.",
        per.(fn pool, c, _ ->
          for {method, e} <- Map.get(c, "methods", %{}),
              {outcome, n} <- [{"ok", ok(e)} | Enum.to_list(Map.get(e, "errors", %{}))],
              do: {[pool: pool, method: method, outcome: outcome], n}
        end)
      ),
      histogram_family(
        "snakepit_call_duration_seconds",
        "Time calls ran in the Python workers.",
        per.(fn pool, c, _ ->
          for {method, e} <- Map.get(c, "methods", %{}),
              do: {[pool: pool, method: method], e["sum_ns"], e["buckets"]}
        end)
      ),
      histogram_family(
        "snakepit_queue_wait_seconds",
        "Time calls waited inside the Python workers before running.",
        per.(fn pool, c, _ ->
          for e <- List.wrap(c["queue_wait"]), do: {[pool: pool], e["sum_ns"], e["buckets"]}
        end)
      ),
      family(
        "snakepit_stream_chunks_total",
        "counter",
        "Chunks streamed by the Python workers, by method.",
        per.(fn pool, c, _ ->
          for {method, e} <- Map.get(c, "methods", %{}),
              Map.get(e, "chunks", 0) > 0,
              do: {[pool: pool, method: method], e["chunks"]}
        end)
      ),
      family(
        "snakepit_refused_calls_total",
        "counter",
        "Calls the Python workers refused before running, by kind.",
        per.(fn pool, c, _ ->
          for {kind, n} <- Map.get(c, "refused", %{}), do: {[pool: pool, kind: kind], n}
        end)
      ),
      family(
        "snakepit_inflight_calls",
        "gauge",
        "Calls in flight in the Python workers.",
        per.(fn pool, _, g -> [{[pool: pool], Map.get(g, "inflight", 0)}] end)
      ),
      family(
        "snakepit_loaded_models",
        "gauge",
        "Models the Python workers have loaded.",
        per.(fn pool, _, g -> [{[pool: pool], Map.get(g, "loaded_models", 0)}] end)
      ),
      histogram_family(
        "snakepit_model_load_seconds",
        "Time models took to load in the Python workers.",
        per.(fn pool, c, _ ->
          for e <- List.wrap(c["model_loads"]), do: {[pool: pool], e["sum_ns"], e["buckets"]}
        end)
      ),
      family(
        "snakepit_beam_calls_total",
        "counter",
        "Calls from the Python workers into the BEAM, by function and outcome.",
        per.(fn pool, c, _ ->
          for {fun, e} <- Map.get(c, "beam_calls", %{}),
              {outcome, n} <- [{"ok", ok(e)} | Enum.to_list(Map.get(e, "errors", %{}))],
              do: {[pool: pool, function: fun, outcome: outcome], n}
        end)
      ),
      family(
        "snakepit_worker_cpu_seconds_total",
        "counter",
        "CPU time of the Python worker processes.",
        per.(fn pool, c, _ -> [{[pool: pool], get_in(c, ["process", "cpu_seconds"]) || 0}] end)
      ),
      family(
        "snakepit_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of the Python worker processes.",
        per.(fn pool, _, g ->
          [{[pool: pool], get_in(g, ["process", "resident_memory_bytes"]) || 0}]
        end)
      )
    ]
  end

  defp ok(e),
    do: Map.get(e, "count", 0) - (e |> Map.get("errors", %{}) |> Map.values() |> Enum.sum())

  # What survives a process: everything but the gauges.
  defp counters(report) when is_map(report) do
    report
    |> Map.take(["methods", "queue_wait", "refused", "model_loads", "beam_calls"])
    |> Map.put("process", %{"cpu_seconds" => get_in(report, ["process", "cpu_seconds"]) || 0})
    |> recount()
  end

  # a method's "ok" is derived again after adding (count - errors)
  defp recount(counts),
    do:
      update_in(
        counts,
        [Access.key("methods", %{})],
        &Map.new(&1, fn {m, e} -> {m, Map.delete(e, "ok")} end)
      )

  defp gauges(nil), do: %{}

  defp gauges(report) do
    %{
      "inflight" => Map.get(report, "inflight", 0),
      "loaded_models" => Map.get(report, "loaded_models", 0),
      "process" => %{
        "resident_memory_bytes" => get_in(report, ["process", "resident_memory_bytes"]) || 0
      }
    }
  end

  defp add(a, b) when is_map(a) and is_map(b), do: Map.merge(a, b, fn _k, x, y -> add(x, y) end)
  defp add(a, b) when is_number(a) and is_number(b), do: a + b
  defp add(_a, b), do: b

  defp label(nil), do: "none"
  defp label(name) when is_binary(name), do: name
  defp label(name), do: to_string(name)

  # ------------------------------------------------------------ the text format

  defp family(_name, _type, _help, []), do: []

  defp family(name, type, help, samples) do
    [
      "# HELP #{name} #{help}\n# TYPE #{name} #{type}\n",
      for({labels, value} <- samples, do: [name, labels(labels), " ", number(value), "\n"])
    ]
  end

  defp histogram_family(_name, _help, []), do: []

  defp histogram_family(name, help, series) do
    [
      "# HELP #{name} #{help}\n# TYPE #{name} histogram\n",
      for {labels, sum_ns, buckets} <- series do
        buckets = Map.new(buckets || %{}, fn {k, n} -> {k, n} end)
        count = buckets |> Map.values() |> Enum.sum()

        {lines, _} =
          Enum.map_reduce(@bounds, 0, fn k, _ ->
            seen = for({b, n} <- buckets, b <= k, do: n) |> Enum.sum()

            {[
               name,
               "_bucket",
               labels(labels ++ [le: float(Integer.pow(2, k) / 1.0e9)]),
               " ",
               number(seen),
               "\n"
             ], seen}
          end)

        [
          lines,
          [name, "_bucket", labels(labels ++ [le: "+Inf"]), " ", number(count), "\n"],
          [name, "_sum", labels(labels), " ", float((sum_ns || 0) / 1.0e9), "\n"],
          [name, "_count", labels(labels), " ", number(count), "\n"]
        ]
      end
    ]
  end

  defp labels([]), do: ""

  defp labels(labels) do
    ["{", Enum.map_join(labels, ",", fn {k, v} -> "#{k}=\"#{escape(to_string(v))}\"" end), "}"]
  end

  defp escape(text) do
    text
    |> String.replace("\\", "\\\\")
    |> String.replace("\"", "\\\"")
    |> String.replace("\n", "\\n")
  end

  defp number(n) when is_integer(n), do: Integer.to_string(n)
  defp number(n) when is_float(n), do: float(n)

  defp float(x), do: :erlang.float_to_binary(x / 1, [:short])
end

defmodule Snakepit.Metrics.Handler do
  @moduledoc false
  # The :httpd module serving GET /metrics (and 404 for anything else).
  require Record
  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  def unquote(:do)(data) do
    case {mod(data, :method), mod(data, :request_uri)} do
      {~c"GET", ~c"/metrics" ++ _} ->
        body = Snakepit.Metrics.exposition_now()

        head = [
          code: 200,
          content_type: ~c"text/plain; version=0.0.4; charset=utf-8",
          content_length: Integer.to_charlist(byte_size(body))
        ]

        {:proceed, [response: {:response, head, [body]}]}

      _ ->
        {:proceed, [response: {404, ~c"not found: GET /metrics"}]}
    end
  end
end
