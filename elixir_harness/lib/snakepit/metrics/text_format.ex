defmodule Snakepit.Metrics.TextFormat do
  @moduledoc false
  # Prometheus's text exposition format (version 0.0.4): a family's HELP and
  # TYPE lines and its samples, histograms as cumulative `_bucket`s with
  # `_sum` and `_count`, label values escaped. Knows nothing of pools.

  # Exposed histogram bounds: 2**k ns for these k (~1 us to ~275 s, a factor of 4 apart),
  # as the Python endpoint does: counts are kept by the duration's bit length.
  @bounds Enum.take_every(10..38, 2)

  @doc "A gauge or counter family: `samples` are `{labels, value}` (none: no lines at all)."
  def family(_name, _type, _help, []), do: []

  def family(name, type, help, samples) do
    [
      "# HELP #{name} #{help}\n# TYPE #{name} #{type}\n",
      for({labels, value} <- samples, do: [name, labels(labels), " ", number(value), "\n"])
    ]
  end

  @doc "A histogram family: `series` are `{labels, sum_ns, %{bit_length => count}}`."
  def histogram_family(_name, _help, []), do: []

  def histogram_family(name, help, series) do
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
