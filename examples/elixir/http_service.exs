# An HTTP service in front of a pool, on OTP's own :inets HTTP server (no
# Phoenix, no hex packages): JSON requests become Snakepit calls, the pool's
# errors become HTTP statuses.
#
#     cd elixir_harness && mix run ../examples/elixir/http_service.exs
#
# runs the service on a free loopback port, makes a few requests against it
# with :httpc, prints them and stops. To keep it serving:
#
#     cd elixir_harness && HTTP_SERVICE_SERVE=1 HTTP_SERVICE_PORT=8080 \
#       mix run ../examples/elixir/http_service.exs
#     curl -s localhost:8080/predict -d '{"text": "I love this"}'
#
# The Python half is examples/http_worker.py. Routes, statuses and settings:
# docs/http_service.md.

Logger.configure(level: :warning)

defmodule HttpService.JSON do
  @moduledoc false
  # Just enough JSON for this example: OTP 25 has no json module and
  # Elixir 1.14 no JSON. Objects decode to maps with string keys; anything
  # JSON has no word for (a pid, a struct) is encoded as its inspect/1 text,
  # a binary that is not UTF-8 as base64.

  @doc "A term as JSON text."
  def encode(term), do: term |> enc() |> IO.iodata_to_binary()

  defp enc(nil), do: "null"
  defp enc(true), do: "true"
  defp enc(false), do: "false"
  defp enc(atom) when is_atom(atom), do: str(Atom.to_string(atom))
  defp enc(int) when is_integer(int), do: Integer.to_string(int)
  defp enc(float) when is_float(float), do: Float.to_string(float)

  defp enc(bin) when is_binary(bin),
    do: str(if String.valid?(bin), do: bin, else: Base.encode64(bin))

  defp enc(%DateTime{} = dt), do: str(DateTime.to_iso8601(dt))
  defp enc(%_{} = struct), do: str(inspect(struct))
  defp enc(%{} = map), do: ["{", join(Enum.map(map, fn {k, v} -> [key(k), ":", enc(v)] end)), "}"]
  defp enc(list) when is_list(list), do: ["[", join(Enum.map(list, &enc/1)), "]"]
  defp enc(tuple) when is_tuple(tuple), do: enc(Tuple.to_list(tuple))
  defp enc(other), do: str(inspect(other))

  defp key(k) when is_binary(k) or is_atom(k), do: enc(k)
  defp key(k), do: str(inspect(k))

  defp join(items), do: Enum.intersperse(items, ",")
  defp str(s), do: [?", escape(s), ?"]

  defp escape(<<c, rest::binary>>) when c in [?", ?\\], do: [?\\, c | escape(rest)]
  defp escape(<<?\n, rest::binary>>), do: ["\\n" | escape(rest)]
  defp escape(<<?\r, rest::binary>>), do: ["\\r" | escape(rest)]
  defp escape(<<?\t, rest::binary>>), do: ["\\t" | escape(rest)]

  defp escape(<<c, rest::binary>>) when c < 0x20,
    do: ["\\u00", Base.encode16(<<c>>) | escape(rest)]

  defp escape(<<c, rest::binary>>), do: [c | escape(rest)]
  defp escape(<<>>), do: []

  @doc "`{:ok, term}` or `{:error, why}`."
  def decode(text) when is_binary(text) do
    case value(ws(text)) do
      {term, rest} -> if ws(rest) == "", do: {:ok, term}, else: {:error, "trailing data"}
    end
  catch
    {:json, why} -> {:error, why}
  end

  defp fail(why), do: throw({:json, why})

  defp ws(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: ws(rest)
  defp ws(rest), do: rest

  defp value("{" <> rest), do: object(ws(rest), %{})
  defp value("[" <> rest), do: array(ws(rest), [])
  defp value("\"" <> rest), do: string(rest, [])
  defp value("true" <> rest), do: {true, rest}
  defp value("false" <> rest), do: {false, rest}
  defp value("null" <> rest), do: {nil, rest}
  defp value(<<c, _::binary>> = text) when c == ?- or c in ?0..?9, do: number(text)
  defp value(""), do: fail("unexpected end of input")
  defp value(_), do: fail("unexpected character")

  defp object("}" <> rest, acc) when acc == %{}, do: {acc, rest}

  defp object("\"" <> rest, acc) do
    {key, rest} = string(rest, [])

    {val, rest} =
      case ws(rest) do
        ":" <> rest -> value(ws(rest))
        _ -> fail("expected ':'")
      end

    acc = Map.put(acc, key, val)

    case ws(rest) do
      "," <> rest -> object(ws(rest), acc)
      "}" <> rest -> {acc, rest}
      _ -> fail("expected ',' or '}'")
    end
  end

  defp object(_, _), do: fail("expected a string key")

  defp array("]" <> rest, []), do: {[], rest}

  defp array(text, acc) do
    {val, rest} = value(text)

    case ws(rest) do
      "," <> rest -> array(ws(rest), [val | acc])
      "]" <> rest -> {Enum.reverse([val | acc]), rest}
      _ -> fail("expected ',' or ']'")
    end
  end

  @escapes %{
    ?" => ?",
    ?\\ => ?\\,
    ?/ => ?/,
    ?b => ?\b,
    ?f => ?\f,
    ?n => ?\n,
    ?r => ?\r,
    ?t => ?\t
  }

  defp string("\"" <> rest, acc) do
    text = acc |> Enum.reverse() |> IO.iodata_to_binary()
    if String.valid?(text), do: {text, rest}, else: fail("invalid UTF-8 in a string")
  end

  defp string("\\u" <> <<h::binary-4, rest::binary>>, acc) do
    case {hex(h), rest} do
      {hi, "\\u" <> <<l::binary-4, rest::binary>>} when hi in 0xD800..0xDBFF ->
        lo = hex(l)
        unless lo in 0xDC00..0xDFFF, do: fail("bad surrogate pair")
        cp = 0x10000 + Bitwise.bsl(hi - 0xD800, 10) + (lo - 0xDC00)
        string(rest, [<<cp::utf8>> | acc])

      {cp, _} when cp in 0xD800..0xDFFF ->
        fail("lone surrogate")

      {cp, _} ->
        string(rest, [<<cp::utf8>> | acc])
    end
  end

  defp string(<<?\\, e, rest::binary>>, acc) when is_map_key(@escapes, e),
    do: string(rest, [@escapes[e] | acc])

  defp string(<<?\\, _::binary>>, _), do: fail("bad escape")
  defp string(<<c, _::binary>>, _) when c < 0x20, do: fail("control character in a string")
  defp string(<<c, rest::binary>>, acc), do: string(rest, [c | acc])
  defp string(<<>>, _), do: fail("unterminated string")

  defp hex(h) do
    if h =~ ~r/\A[0-9a-fA-F]{4}\z/, do: String.to_integer(h, 16), else: fail("bad \\u escape")
  end

  defp number(text) do
    [num] =
      Regex.run(~r/\A-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/, text, capture: :first) ||
        fail("bad number")

    rest = binary_part(text, byte_size(num), byte_size(text) - byte_size(num))

    cond do
      num == "-" -> fail("bad number")
      num =~ ~r/[.eE]/ -> {parse_float(num), rest}
      true -> {String.to_integer(num), rest}
    end
  end

  # "1e5" is a float in JSON; Float.parse takes it, and says :error past 1.8e308
  defp parse_float(num) do
    case Float.parse(num) do
      {float, ""} -> float
      _ -> fail("number out of range")
    end
  end
end

defmodule HttpService.Handler do
  @moduledoc false
  # The :httpd callback module: do/1 gets each request as a `mod` record and
  # answers {:proceed, [response: ...]}. It runs in the request's own process
  # (one per connection), so a slow call blocks only its own client.
  #
  #   GET  /health             the pool's stats (503 when no worker is ready)
  #   POST /predict            {"text": ...} -> predict(text=...)
  #   POST /call/<method>      {"args": [...], "kwargs": {...}} -> method(*args, **kwargs)
  #   GET  /stream/<method>?k=v  a streamed call, one JSON line per chunk (chunked)
  #
  # ?timeout_ms=N on any call route: the call's timeout (default and cap below).

  require Record
  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  alias HttpService.JSON

  @status %{
    bad_arguments: 400,
    bad_request: 400,
    unknown_method: 404,
    not_found: 404,
    method_not_allowed: 405,
    overloaded: 503,
    queue_timeout: 503,
    circuit_open: 503,
    shutting_down: 503,
    noproc: 503,
    timeout: 504,
    worker_crashed: 502,
    worker_hung: 502,
    protocol_error: 502
  }

  @doc "What the routes need: `%{pool, timeout_ms, max_timeout_ms}`."
  def configure(config), do: :persistent_term.put(__MODULE__, config)

  def unquote(:do)(data) do
    config = :persistent_term.get(__MODULE__)
    uri = URI.parse(List.to_string(mod(data, :request_uri)))
    query = URI.decode_query(uri.query || "")
    segments = String.split(uri.path || "/", "/", trim: true)

    response =
      try do
        route(mod(data, :method), segments, query, data, config)
      rescue
        e -> json(500, %{error: :internal, message: Exception.message(e)})
      catch
        :exit, _ -> json(503, %{error: :noproc, message: "the pool is not running"})
      end

    {:proceed, [response: response]}
  end

  defp route(~c"GET", ["health"], _query, _data, config) do
    stats = Snakepit.Pool.stats(config.pool)

    workers =
      for w <- stats.worker_details,
          do: Map.take(w, [:worker_id, :os_pid, :status, :inflight, :served])

    keys = ~w(ready busy idle down inflight queue_depth max_queue served restarts shed)a
    body = stats |> Map.take(keys) |> Map.put(:workers, workers)
    json(if(stats.ready > 0, do: 200, else: 503), body)
  end

  defp route(~c"POST", ["predict"], query, data, config) do
    with {:ok, timeout} <- timeout(query, config),
         {:ok, %{} = body} <- body(data, :required) do
      reply(Snakepit.call(config.pool, %{method: "predict", kwargs: body}, timeout: timeout))
    else
      {:ok, _not_an_object} -> error(:bad_request, "the body must be a JSON object")
      {:error, response} -> response
    end
  end

  defp route(~c"POST", ["call", method], query, data, config) do
    with {:ok, timeout} <- timeout(query, config),
         {:ok, body} <- body(data, :optional),
         {:ok, args, kwargs} <- args(body) do
      request = %{method: method, args: args, kwargs: kwargs}
      reply(Snakepit.call(config.pool, request, timeout: timeout))
    else
      {:error, response} -> response
    end
  end

  defp route(~c"GET", ["stream", method], query, data, config) do
    case timeout(query, config) do
      {:ok, timeout} ->
        kwargs =
          query |> Map.delete("timeout_ms") |> Map.new(fn {k, v} -> {k, query_value(v)} end)

        stream(data, config.pool, %{method: method, kwargs: kwargs}, timeout)

      {:error, response} ->
        response
    end
  end

  defp route(method, path, _query, _data, _config) do
    if path in [["health"], ["predict"]] or match?([r, _] when r in ["call", "stream"], path),
      do: error(:method_not_allowed, "#{method} is not served on this path"),
      else:
        error(
          :not_found,
          "no route; try GET /health, POST /predict, POST /call/<method>, GET /stream/<method>"
        )
  end

  # ---------------------------------------------------------------- requests

  defp body(data, required) do
    case {IO.iodata_to_binary(mod(data, :entity_body)), required} do
      {"", :optional} ->
        {:ok, %{}}

      {"", :required} ->
        {:error, error(:bad_request, "a JSON body is required")}

      {text, _} ->
        with {:error, why} <- JSON.decode(text),
             do: {:error, error(:bad_request, "invalid JSON: #{why}")}
    end
  end

  defp args(%{} = body) do
    case {Map.get(body, "args", []), Map.get(body, "kwargs", %{}),
          Map.keys(Map.drop(body, ["args", "kwargs"]))} do
      {args, %{} = kwargs, []} when is_list(args) ->
        {:ok, args, kwargs}

      {_, _, []} ->
        {:error, error(:bad_request, ~s("args" must be a list, "kwargs" an object))}

      {_, _, extra} ->
        {:error, error(:bad_request, "unknown fields #{inspect(extra)}; expected args, kwargs")}
    end
  end

  defp args(_) do
    expected = ~s({"args": [...], "kwargs": {...}})
    {:error, error(:bad_request, "the body must be a JSON object: #{expected}")}
  end

  defp timeout(%{"timeout_ms" => text}, %{max_timeout_ms: max}) do
    case Integer.parse(text) do
      {ms, ""} when ms in 1..max -> {:ok, ms}
      _ -> {:error, error(:bad_request, "timeout_ms must be an integer in 1..#{max}")}
    end
  end

  defp timeout(_query, config), do: {:ok, config.timeout_ms}

  # ?n=5 is the integer 5, ?name=ada the string "ada" (values that parse as JSON are JSON)
  defp query_value(text) do
    case JSON.decode(text) do
      {:ok, value} -> value
      {:error, _} -> text
    end
  end

  # ---------------------------------------------------------------- responses

  defp reply({:ok, result}), do: json(200, %{result: result})
  defp reply({:error, %Snakepit.Error{} = e}), do: snakepit_error(e)

  # The error's kind, type, message and details; never its traceback (that
  # stays in the BEAM's logs: clients should not see the server's code).
  defp snakepit_error(e) do
    body = %{error: e.kind, type: e.type, message: e.message, details: e.details}
    json(Map.get(@status, e.kind, 500), body)
  end

  defp error(kind, message), do: json(Map.fetch!(@status, kind), %{error: kind, message: message})

  defp json(status, term) do
    body = JSON.encode(term)

    head = [
      code: status,
      content_type: ~c"application/json",
      content_length: Integer.to_charlist(byte_size(body))
    ]

    {:response, head, [body]}
  end

  # ---------------------------------------------------------------- streams
  #
  # The status line goes out with the stream's first event: an error before
  # any chunk (unknown method, bad arguments, overloaded) is an ordinary JSON
  # error response; after that the status is 200 and each event is one line
  # of JSON in its own HTTP chunk: {"data": chunk} ... then {"result": r} or
  # {"error": ...}. The callback waits until its line is written, so a slow
  # HTTP client slows the Python generator down (Snakepit.Stream's credit)
  # instead of piling chunks up in memory.

  defp stream(data, pool, request, timeout) do
    handler = self()
    tag = make_ref()

    callback = fn event ->
      mon = Process.monitor(handler)
      send(handler, {tag, self(), event})

      receive do
        {^tag, :written} -> Process.demonitor(mon, [:flush])
        {:DOWN, ^mon, _, _, _} -> raise "the HTTP request ended; cancelling the stream"
      end
    end

    case Snakepit.Stream.open(pool, request, callback, timeout: timeout) do
      {:ok, _ref} -> first_event(data, tag, timeout)
      {:error, e} -> snakepit_error(e)
    end
  end

  defp first_event(data, tag, timeout) do
    receive do
      {^tag, from, {:error, e}} ->
        send(from, {tag, :written})
        snakepit_error(e)

      {^tag, from, event} ->
        # HTTP/1.0 has no chunked encoding: the body then ends when the connection closes
        plain? = mod(data, :http_version) != ~c"HTTP/1.1"

        framing =
          if plain?, do: {~c"connection", ~c"close"}, else: {~c"transfer-encoding", ~c"chunked"}

        :httpd_response.send_header(data, 200, [
          {~c"content-type", ~c"application/x-ndjson"},
          framing
        ])

        write(data, plain?, tag, from, event)
    after
      timeout + 5_000 -> error(:timeout, "the stream sent nothing in time")
    end
  end

  defp write(data, plain?, tag, from, event) do
    line = JSON.encode(line(event)) <> "\n"
    :httpd_response.send_chunk(data, line, plain?)
    send(from, {tag, :written})

    case event do
      {:data, _} ->
        receive do
          {^tag, from, event} -> write(data, plain?, tag, from, event)
        end

      _end_or_error ->
        :httpd_response.send_final_chunk(data, plain?)
        {:already_sent, 200, 0}
    end
  end

  defp line({:data, chunk}), do: %{data: chunk}
  defp line({:end, result}), do: %{result: result}

  defp line({:error, e}),
    do: %{error: %{error: e.kind, type: e.type, message: e.message, details: e.details}}
end

defmodule HttpService do
  @moduledoc false

  @doc "Starts the pool and the HTTP server; returns `{httpd, port}`."
  def start(cfg) do
    {:ok, _} =
      Snakepit.Pool.start_link(
        name: cfg.pool,
        target: Path.expand("../http_worker.py", __DIR__),
        size: cfg.size,
        max_queue: cfg.max_queue
      )

    HttpService.Handler.configure(Map.take(cfg, [:pool, :timeout_ms, :max_timeout_ms]))
    root = String.to_charlist(System.tmp_dir!())

    {:ok, httpd} =
      :inets.start(:httpd,
        port: cfg.port,
        bind_address: cfg.ip,
        server_name: ~c"snakepit_http_service",
        server_root: root,
        document_root: root,
        modules: [HttpService.Handler],
        # a larger request body is refused (413) before it is read
        max_body_size: cfg.max_body
      )

    [port: port] = :httpd.info(httpd, [:port])
    {httpd, port}
  end

  def stop(httpd, pool) do
    :ok = :inets.stop(:httpd, httpd)
    Snakepit.Pool.stop(pool)
  end

  @doc "A request with :httpc; returns {status, body}."
  def request(port, method, path, body \\ nil) do
    url = ~c"http://127.0.0.1:#{port}#{path}"

    request =
      if method in [:post, :put], do: {url, [], ~c"application/json", body || ""}, else: {url, []}

    {:ok, {{_, status, _}, _headers, resp}} =
      :httpc.request(method, request, [timeout: 60_000], body_format: :binary)

    {status, resp}
  end
end

env = fn name, default -> System.get_env("HTTP_SERVICE_" <> name, default) end
int = fn name, default -> env.(name, "#{default}") |> String.to_integer() end
{:ok, ip} = :inet.parse_address(String.to_charlist(env.("IP", "127.0.0.1")))

cfg = %{
  pool: :http_service,
  port: int.("PORT", 0),
  ip: ip,
  size: int.("POOL_SIZE", 2),
  max_queue: int.("MAX_QUEUE", 16),
  max_body: int.("MAX_BODY", 65_536),
  timeout_ms: int.("TIMEOUT_MS", 5_000),
  max_timeout_ms: int.("MAX_TIMEOUT_MS", 60_000)
}

{httpd, port} = HttpService.start(cfg)

if env.("SERVE", "") in ["1", "true"] do
  IO.puts("serving on http://#{:inet.ntoa(ip)}:#{port} (pool of #{cfg.size})")
  Process.sleep(:infinity)
end

IO.puts("serving on http://127.0.0.1:#{port}; a few requests with :httpc:")

requests = [
  {:get, "/health", nil, 200},
  {:post, "/predict", ~s({"text": "I love this, great stuff"}), 200},
  {:post, "/call/echo", ~s({"args": [{"naïve": [1, 2.5, null, "tab\\there"]}]}), 200},
  {:get, "/stream/count?n=3", nil, 200},
  {:post, "/predict", ~s({"txt": "a typo"}), 400},
  {:post, "/predict", "not json", 400},
  {:post, "/call/nope", nil, 404},
  {:post, "/call/fail", ~s({"args": ["it broke"]}), 500},
  {:post, "/call/sleep?timeout_ms=200", ~s({"args": [30]}), 504}
]

results =
  for {method, path, body, expected} <- requests do
    {status, resp} = HttpService.request(port, method, path, body)
    shown = method |> Atom.to_string() |> String.upcase()
    IO.puts("\n#{shown} #{path}#{if body, do: "  " <> body, else: ""}")

    IO.puts(
      "  -> #{status}  #{resp |> String.trim_trailing() |> String.replace("\n", "\n           ")}"
    )

    status == expected
  end

HttpService.stop(httpd, cfg.pool)

if Enum.all?(results) do
  IO.puts("\nevery request answered with the expected status")
else
  IO.puts("\nunexpected statuses")
  System.halt(1)
end
