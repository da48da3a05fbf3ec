defmodule Snakepit.TypesTest do
  # Round trips between this BEAM and a real Python worker for the types of
  # docs/types.md (the worker: tests/workers/rich_types.py, which uses numpy).
  use ExUnit.Case, async: false

  alias Snakepit.{Error, Tensor, Worker}

  @worker Path.expand("../../../tests/workers/rich_types.py", __DIR__)

  setup_all do
    {:ok, w} = Worker.start_link(target: @worker, worker_id: "types")
    Process.unlink(w)
    on_exit(fn -> Worker.stop(w) end)
    %{w: w}
  end

  defp call(w, method, args \\ []), do: Worker.call(w, %{method: method, args: args})

  describe "dates and times" do
    test "a DateTime comes back equal, in UTC or in its own zone", %{w: w} do
      utc = ~U[2026-12-01 12:00:00.123456Z]
      assert {:ok, ^utc} = call(w, "when", [utc])

      paris = %DateTime{
        year: 2020,
        month: 7,
        day: 1,
        hour: 12,
        minute: 30,
        second: 5,
        microsecond: {42, 6},
        time_zone: "Europe/Paris",
        zone_abbr: "CEST",
        utc_offset: 3600,
        std_offset: 3600
      }

      assert {:ok, ^paris} = call(w, "when", [paris])
      assert {:ok, later} = call(w, "later", [paris, 90])
      assert DateTime.diff(later, paris) == 90 and later.time_zone == "Europe/Paris"
    end

    test "an ISO 8601 string with an offset arrives as a DateTime with that offset", %{w: w} do
      assert {:ok, %DateTime{utc_offset: 7200, time_zone: "+02:00"} = dt} =
               call(w, "when", ["2026-12-01T12:00:00+02:00"])

      assert DateTime.compare(dt, ~U[2026-12-01 10:00:00Z]) == :eq
      assert DateTime.to_iso8601(dt) == "2026-12-01T12:00:00.000000+02:00"
    end

    test "NaiveDateTime, Date and Time come back equal", %{w: w} do
      for value <- [~N[2020-02-29 23:59:59.999999], ~D[0001-01-01], ~T[10:11:12.000001]] do
        assert {:ok, ^value} = call(w, "echo", [value])
      end

      assert {:ok, ["datetime", "date", "time"]} =
               call(w, "types_of", [~N[2020-01-01 00:00:00], ~D[2020-01-01], ~T[00:00:00]])
    end
  end

  describe "decimals" do
    test "a Decimal struct is exact both ways (without the Decimal library loaded)", %{w: w} do
      d = %{__struct__: Decimal, sign: -1, coef: 123_456_789_012_345_678_901, exp: -20}

      assert {:ok, %{__struct__: Decimal, sign: -1, coef: 246_913_578_024_691_357_802, exp: -20}} =
               call(w, "double", [d])

      assert {:ok, %{__struct__: Decimal, sign: 1, coef: 20, exp: -2}} =
               call(w, "double", ["0.10"])

      nan = %{__struct__: Decimal, sign: 1, coef: :NaN, exp: 0}
      assert {:ok, ^nan} = call(w, "echo", [nan])
    end
  end

  describe "tensors" do
    @dtypes %{
      "bool" => {:u, 8},
      "int8" => {:s, 8},
      "int16" => {:s, 16},
      "int32" => {:s, 32},
      "int64" => {:s, 64},
      "uint8" => {:u, 8},
      "uint16" => {:u, 16},
      "uint32" => {:u, 32},
      "uint64" => {:u, 64},
      "float16" => {:f, 16},
      "float32" => {:f, 32},
      "float64" => {:f, 64},
      "complex64" => {:c, 64},
      "complex128" => {:c, 128}
    }

    test "arrays of every dtype and several shapes are rebuilt with the right values", %{w: w} do
      for {dtype, type} <- @dtypes, shape <- [[], [0], [5], [2, 3], [2, 1, 4]] do
        assert {:ok, %Tensor{type: ^type, shape: tuple_shape} = t} =
                 call(w, "array", [dtype, shape])

        assert tuple_shape == List.to_tuple(shape)
        assert Tensor.to_list(t) == expected(shape, type, dtype), "#{dtype} #{inspect(shape)}"
        # and the tensor goes back as an argument annotated np.ndarray
        size = Enum.reduce(shape, 1, &(&1 * &2))
        sum = Enum.sum(for i <- 0..(size - 1)//1, do: element(rem(i, 100), dtype)) * 1.0
        dtype_back = if dtype == "bool", do: "uint8", else: dtype

        assert {:ok, %{"dtype" => ^dtype_back, "shape" => ^shape, "sum" => ^sum}} =
                 call(w, "stats", [t])
      end
    end

    test "the data is Nx's layout: row-major, each element little-endian", %{w: w} do
      {:ok, t} = call(w, "array", ["float32", [2, 3]])
      assert t.data == for(i <- 0..5, into: <<>>, do: <<i * 1.0::float-little-32>>)
      {:ok, t} = call(w, "array", ["int16", [3, 2]])
      assert t.data == for(i <- 0..5, into: <<>>, do: <<i::signed-little-16>>)
      # as Nx.from_binary/2 reads it on this (little-endian) machine
      assert :erlang.system_info(:endian) == :little
      assert Tensor.native(t.data, t.type) == t.data
    end

    test "an ML result: labels, scores and numpy scalars as Elixir values", %{w: w} do
      assert {:ok, %{"label" => "pos", "scores" => scores, "n" => 2}} =
               call(w, "classify", ["great"])

      assert [a, b] = Tensor.to_list(scores)
      assert_in_delta a, 0.1, 1.0e-6
      assert_in_delta b, 0.9, 1.0e-6
    end

    test "a tensor built in Elixir arrives as an array", %{w: w} do
      t = Tensor.from_list([[1.5, 2.5], [3.0, :infinity]], {:f, 32})

      assert {:ok, %{"dtype" => "float32", "shape" => [2, 2], "sum" => :infinity}} =
               call(w, "stats", [t])

      assert {:ok, %{"dtype" => "int64", "shape" => [2], "sum" => 3.0}} =
               call(w, "stats", [[1, 2]])
    end

    test "NaN and the infinities are Nx's atoms", %{w: w} do
      assert {:ok, [:nan, :infinity, :neg_infinity, :nan]} = call(w, "nonfinite")
    end
  end

  describe "coercion" do
    test "maps become dataclasses, attrs classes and pydantic models", %{w: w} do
      shape = %{"name" => "tri", "points" => [%{"x" => 1}, %{x: 2, y: 3}]}

      assert {:ok, %{"name" => "tri", "points" => [%{"x" => 1.0, "y" => 0.0}, _], "at" => nil}} =
               call(w, "shape", [shape])

      assert {:ok, %{"width" => 3, "label" => "box"}} = call(w, "box", [%{width: 3}])

      order = %{"id" => 7, "total" => "9.99", "placed" => ~U[2020-01-01 00:00:00.000000Z]}

      assert {:ok, %{"total" => %{__struct__: Decimal, coef: 999, exp: -2}, "placed" => placed}} =
               call(w, "order", [order])

      assert placed == ~U[2020-01-01 00:00:00.000000Z]
    end

    test "a value that cannot be coerced is :bad_arguments naming the parameter", %{w: w} do
      assert {:error, %Error{kind: :bad_arguments, message: message}} =
               call(w, "when", ["not a date"])

      assert message =~ "argument 't' must be DateTime.t() | NaiveDateTime.t()"

      assert {:error, %Error{kind: :bad_arguments, message: message}} =
               call(w, "shape", [%{"name" => "x", "points" => [%{"x" => "no"}]}])

      assert message =~ "argument 's'['points'][0]['x'] must be float()"
    end

    test "describe shows the Elixir type each parameter accepts", %{w: w} do
      {:ok, %{methods: methods}} = Worker.describe(w)
      stats = Enum.find(methods, &(&1.name == "stats"))

      assert [%{annotation: "ndarray", type: "Snakepit.Tensor.t() or nested lists of numbers"}] =
               stats.params
    end
  end

  describe "Snakepit.Tensor" do
    test "from_list/2 and to_list/1 are inverse for every type" do
      for {type, values} <- [
            {{:s, 8}, [-128, 0, 127]},
            {{:u, 64}, [0, 18_446_744_073_709_551_615]},
            {{:f, 16}, [1.5, -2.0, :nan, :infinity, :neg_infinity]},
            {{:bf, 16}, [1.0, -0.5, :nan]},
            {{:f, 64}, [1.0e300, :neg_infinity]},
            {{:c, 128}, [{1.0, -2.0}, {0.0, 0.5}]}
          ] do
        assert values |> Tensor.from_list(type) |> Tensor.to_list() == values
      end

      assert Tensor.from_list(7, {:s, 32}) == %Tensor{
               type: {:s, 32},
               shape: {},
               data: <<7::32-little>>
             }

      assert Tensor.to_list(Tensor.from_list([[], []], {:f, 32})) == [[], []]
    end

    test "bad input is an ArgumentError that shows it" do
      assert_raise ArgumentError, ~r/equal lengths.*got: \[\[1\], \[1, 2\]\]/, fn ->
        Tensor.from_list([[1], [1, 2]], {:s, 8})
      end

      assert_raise ArgumentError, ~r/not a tensor type, got: \{:f, 128\}/, fn ->
        Tensor.from_list([1.0], {:f, 128})
      end

      assert_raise ArgumentError, ~r/does not hold 4 elements/, fn ->
        Tensor.to_list(%Tensor{type: {:s, 16}, shape: {4}, data: <<1, 2>>})
      end
    end

    test "big-endian machines swap each element (Nx keeps the machine's order)" do
      assert Tensor.native(<<1, 2, 3, 4>>, {:s, 16}, :big) == <<2, 1, 4, 3>>

      assert Tensor.native(<<1, 2, 3, 4, 5, 6, 7, 8>>, {:c, 64}, :big) ==
               <<4, 3, 2, 1, 8, 7, 6, 5>>
    end
  end

  # The worker's np.arange(n) % 100 cast to dtype, as Tensor.to_list shows it.
  defp expected([], type, dtype), do: element(0, dtype) |> as(type)

  defp expected(shape, type, dtype) do
    size = Enum.reduce(shape, 1, &(&1 * &2))
    flat = for i <- 0..(size - 1)//1, do: element(rem(i, 100), dtype) |> as(type)
    nest(flat, shape)
  end

  defp element(i, "bool"), do: if(i == 0, do: 0, else: 1)
  defp element(i, "float" <> _), do: i * 1.0
  defp element(i, "complex" <> _), do: i * 1.0
  defp element(i, _), do: i

  defp as(x, {:c, _}), do: {x, 0.0}
  defp as(x, _), do: x

  defp nest(flat, [_]), do: flat

  defp nest(flat, [outer | inner]) do
    chunk = Enum.reduce(inner, 1, &(&1 * &2))

    if chunk == 0,
      do: List.duplicate(nest([], inner), outer),
      else: flat |> Enum.chunk_every(chunk) |> Enum.map(&nest(&1, inner))
  end
end
