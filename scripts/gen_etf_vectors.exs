# Writes tests/vectors/etf_golden.json: terms encoded by the real
# :erlang.term_to_binary, with a description of the Python value each must
# decode to. Run from the repository root:
#
#     elixir scripts/gen_etf_vectors.exs [OUTPUT]
#
# Each vector is {"name", "hex", "value", "canonical"}. "canonical" is true
# when snakepit_py's encoder must reproduce the bytes exactly: the term was
# written the way OTP 26+ writes it ({:minor_version, 2}: UTF-8 atom tags) and
# holds no list of bytes (which the BEAM writes as STRING_EXT and snakepit_py
# as LIST_EXT). "compressed" gives the zlib level when the term was written
# with [{:compressed, level}].
#
# The value description is JSON: true/false/null for the three special atoms,
# {"int": "123"}, {"float": "<8 bytes IEEE, hex>"}, {"atom": "<UTF-8 hex>"},
# {"str": "<UTF-8 hex>"}, {"bytes": "<hex>"}, {"list": [...]},
# {"improper": [[...], tail]}, {"tuple": [...]}, {"map": [[k, v], ...]},
# {"opaque": "pid" | "port" | "reference" | "fun"}.

defmodule GenEtfVectors do
  @modern [minor_version: 2]

  def main(args) do
    out = List.first(args) || "tests/vectors/etf_golden.json"
    vectors = modern() ++ otp25() ++ compressed() ++ old_floats() ++ handmade()
    json = ["[\n", Enum.intersperse(Enum.map(vectors, &vector_json/1), ",\n"), "\n]\n"]
    File.mkdir_p!(Path.dirname(out))
    File.write!(out, json)
    IO.puts("wrote #{length(vectors)} vectors to #{out}")
  end

  # Terms written as OTP 26+ writes them.
  defp modern do
    port = Port.open({:spawn, "true"}, [])

    terms = [
      {"nil", nil},
      {"true", true},
      {"false", false},
      {"atom_ok", :ok},
      {"atom_empty", :""},
      {"atom_latin1", :café},
      {"atom_unicode", :日本語},
      {"atom_255_chars", String.to_atom(String.duplicate("é", 255))},
      {"int_0", 0},
      {"int_255", 255},
      {"int_256", 256},
      {"int_minus_1", -1},
      {"int32_max", 2_147_483_647},
      {"int32_min", -2_147_483_648},
      {"int32_max_plus_1", 2_147_483_648},
      {"int32_min_minus_1", -2_147_483_649},
      {"int_2_64", 18_446_744_073_709_551_616},
      {"int_minus_2_64", -18_446_744_073_709_551_616},
      {"big_255_bytes", Integer.pow(2, 2039)},
      {"big_256_bytes", Integer.pow(2, 2040)},
      {"big_negative_large", -Integer.pow(3, 3000)},
      {"float_zero", 0.0},
      {"float_neg_zero", -0.0},
      {"float_1_5", 1.5},
      {"float_pi", :math.pi()},
      {"float_max", 1.7976931348623157e308},
      {"float_min_subnormal", 5.0e-324},
      {"float_negative", -123.456},
      {"binary_empty", ""},
      {"binary_ascii", "hello"},
      {"binary_utf8", "héllo wörld ✓ 🐍"},
      {"binary_not_utf8", <<255, 0, 1>>},
      {"binary_surrogate_not_utf8", <<0xED, 0xA0, 0x80>>},
      {"binary_1000", :binary.copy(<<0xAB>>, 1000)},
      {"list_empty", []},
      {"list_mixed", [1, :a, "b", 2.5, [], {}]},
      {"list_big_ints", [256, 1000, -1]},
      {"list_nested", [[1, [2, [3, []]]], [[[]]]]},
      {"list_deep_100", Enum.reduce(1..100, [], fn _, acc -> [acc] end)},
      {"improper_int_tail", [1 | 2]},
      {"improper_two_atom_tail", [1, 2 | :a]},
      {"improper_binary_tail", ["a" | "b"]},
      {"improper_tuple_tail", [{1} | {2}]},
      {"tuple_empty", {}},
      {"tuple_1", {1}},
      {"tuple_envelope", {:call, 1, "add", [:x, :y], %{}, %{timeout_ms: 5000}}},
      {"tuple_255", List.to_tuple(Enum.map(1..255, &(&1 * 1000)))},
      {"tuple_256", List.to_tuple(Enum.map(1..256, &(&1 * 1000)))},
      {"map_empty", %{}},
      {"map_atom_keys", %{a: 1, b: "two", c: [3]}},
      {"map_binary_keys", %{"x" => 1, "y" => %{"z" => nil}}},
      {"map_tuple_keys", %{{1, 2} => :a, {:k} => :b}},
      {"map_int_keys", %{1 => :one, 1000 => :thousand, -5 => :neg}},
      {"map_40_keys", Map.new(1..40, fn i -> {"k#{i}", i * 1000} end)},
      {"pid", self()},
      {"reference", make_ref()},
      {"port", port},
      {"fun_export", &:erlang.abs/1},
      {"fun_closure", fn x -> {x, port} end},
      {"fun_no_free_vars", fn -> :ok end},
      {"opaque_in_tuple", {:reply, self(), make_ref()}}
    ]

    for {name, term} <- terms do
      {name, :erlang.term_to_binary(term, @modern), term, canonical?(term), nil}
    end
  end

  # What OTP 25 writes by default: ATOM_EXT for latin-1 atoms, STRING_EXT for byte lists.
  defp otp25 do
    terms = [
      {"otp25_atom", :ok},
      {"otp25_atom_latin1", :café},
      {"otp25_atom_unicode", :日本語},
      {"otp25_envelope", {:call, 1, "add", [1, 2], %{}, %{timeout_ms: 5000}}},
      {"otp25_booleans", {true, false, nil}},
      {"string_ext_bytes", [1, 2, 3]},
      {"string_ext_charlist", ~c"hello"},
      {"string_ext_in_list", [[104, 105], "hi"]},
      {"string_ext_improper", [104, 105 | :tail]}
    ]

    for {name, term} <- terms, do: {name, :erlang.term_to_binary(term), term, false, nil}
  end

  defp compressed do
    terms = [
      {"compressed_binaries", List.duplicate("abc", 100), 6},
      {"compressed_level_9", %{data: :binary.copy("xyz", 500), n: 1}, 9},
      {"compressed_level_1", List.to_tuple(List.duplicate(:ok, 200)), 1},
      # Too small to gain from compression: the BEAM writes it plain.
      {"compressed_small_stays_plain", {:ok, 1}, 6}
    ]

    for {name, term, level} <- terms do
      bin = :erlang.term_to_binary(term, [{:compressed, level} | @modern])
      {name, bin, term, canonical?(term), level}
    end
  end

  # {:minor_version, 0} writes floats as FLOAT_EXT (31 bytes of text).
  defp old_floats do
    for {name, f} <- [{"float_ext_1_5", 1.5}, {"float_ext_neg", -2.5e-10}, {"float_ext_pi", :math.pi()}] do
      {name, :erlang.term_to_binary(f, minor_version: 0), f, false, nil}
    end
  end

  # Tags the BEAM of today no longer writes but still reads, built by hand and
  # checked with binary_to_term.
  defp handmade do
    node = <<119, 13, "nonode@nohost">>

    bins = [
      {"small_atom_ext", <<131, 115, 2, "ok">>},
      {"small_atom_ext_latin1", <<131, 115, 4, "caf", 0xE9>>},
      {"atom_utf8_ext_long_tag", <<131, 118, 0, 2, "ok">>},
      {"atom_ext_true", <<131, 100, 0, 4, "true">>},
      {"pid_ext", <<131, 103, node::binary, 0, 0, 0, 1, 0, 0, 0, 0, 0>>},
      {"port_ext", <<131, 102, node::binary, 0, 0, 0, 5, 0>>},
      {"new_port_ext", <<131, 89, node::binary, 0, 0, 0, 5, 0, 0, 0, 0>>},
      {"v4_port_ext", <<131, 120, node::binary, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0>>},
      {"reference_ext", <<131, 101, node::binary, 0, 0, 0, 7, 0>>},
      {"new_reference_ext", <<131, 114, 0, 3, node::binary, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3>>},
      {"large_tuple_ext_small", <<131, 105, 0, 0, 0, 2, 97, 1, 97, 2>>},
      {"list_ext_of_bytes", <<131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 106>>},
      {"large_big_ext_small_value", <<131, 111, 0, 0, 0, 1, 0, 5>>},
      {"map_ext_unsorted", <<131, 116, 0, 0, 0, 2, 119, 1, "b", 97, 2, 119, 1, "a", 97, 1>>}
    ]

    for {name, bin} <- bins do
      {name, bin, :erlang.binary_to_term(bin), false, nil}
    end
  end

  # Lists of bytes become STRING_EXT on the BEAM but LIST_EXT in snakepit_py.
  defp canonical?([]), do: true

  defp canonical?(l) when is_list(l) do
    case proper_items(l) do
      {items, []} when items != [] ->
        not Enum.all?(items, &(is_integer(&1) and &1 in 0..255)) and Enum.all?(items, &canonical?/1)

      {items, tail} ->
        Enum.all?(items, &canonical?/1) and canonical?(tail)
    end
  end

  defp canonical?(t) when is_tuple(t), do: t |> Tuple.to_list() |> Enum.all?(&canonical?/1)
  defp canonical?(m) when is_map(m), do: Enum.all?(m, fn {k, v} -> canonical?(k) and canonical?(v) end)
  defp canonical?(_), do: true

  defp proper_items(l, acc \\ [])
  defp proper_items([h | t], acc), do: proper_items(t, [h | acc])
  defp proper_items(tail, acc), do: {Enum.reverse(acc), tail}

  defp vector_json({name, bin, term, canonical, level}) do
    [
      ~s(  {"name": "#{name}", "hex": "#{hex(bin)}", "canonical": #{canonical}, ),
      ~s("compressed": #{if level, do: level, else: "null"}, "value": ),
      describe(term),
      "}"
    ]
  end

  defp describe(true), do: "true"
  defp describe(false), do: "false"
  defp describe(nil), do: "null"
  defp describe(i) when is_integer(i), do: ~s({"int": "#{i}"})
  defp describe(f) when is_float(f), do: ~s({"float": "#{hex(<<f::float>>)}"})
  defp describe(a) when is_atom(a), do: ~s({"atom": "#{hex(Atom.to_string(a))}"})

  defp describe(b) when is_binary(b) do
    if String.valid?(b), do: ~s({"str": "#{hex(b)}"}), else: ~s({"bytes": "#{hex(b)}"})
  end

  defp describe(l) when is_list(l) do
    case proper_items(l) do
      {items, []} -> [~s({"list": ), describe_all(items), "}"]
      {items, tail} -> [~s({"improper": [), describe_all(items), ", ", describe(tail), "]}"]
    end
  end

  defp describe(t) when is_tuple(t), do: [~s({"tuple": ), describe_all(Tuple.to_list(t)), "}"]

  defp describe(m) when is_map(m) do
    pairs = for {k, v} <- m, do: ["[", describe(k), ", ", describe(v), "]"]
    [~s({"map": [), Enum.intersperse(pairs, ", "), "]}"]
  end

  defp describe(p) when is_pid(p), do: ~s({"opaque": "pid"})
  defp describe(p) when is_port(p), do: ~s({"opaque": "port"})
  defp describe(r) when is_reference(r), do: ~s({"opaque": "reference"})
  defp describe(f) when is_function(f), do: ~s({"opaque": "fun"})

  defp describe_all(items), do: ["[", Enum.intersperse(Enum.map(items, &describe/1), ", "), "]"]

  defp hex(bin), do: Base.encode16(bin, case: :lower)
end

GenEtfVectors.main(System.argv())
