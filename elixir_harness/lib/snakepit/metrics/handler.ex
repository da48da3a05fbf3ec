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
