defmodule Snakepit.Tensor do
  @moduledoc """
  A numpy array as it arrives from a Python worker, in Nx's layout.

  A worker method that returns a `numpy.ndarray` sends a `%Snakepit.Tensor{}`
  (docs/types.md): `type` in Nx's notation (`{:f, 32}`, `{:s, 64}`, `{:u, 8}`,
  `{:bf, 16}`, `{:c, 64}`, ...), `shape` a tuple (`{}` for a scalar), and
  `data` one binary holding the elements in row-major order, each
  little-endian. That is the binary `Nx.to_binary/1` gives and
  `Nx.from_binary/3` takes on a little-endian machine (every machine Nx's
  compilers run on), so `to_nx/1` hands it over without touching the
  elements. `to_nx/1` and `from_nx/1` exist only when Nx is loaded.

  The same struct goes the other way: an argument annotated `np.ndarray`
  accepts one (build it with `from_list/2` or `from_nx/1`).

  Elements as Elixir values (`to_list/1`, `from_list/2`): integers for
  `:s` and `:u`, floats for `:f` and `:bf` — with Nx's atoms `:nan`,
  `:infinity` and `:neg_infinity` for the values the BEAM has no float for,
  as Nx does —, `{re, im}` tuples for `:c` (Nx gives `Complex` structs).
  A numpy `bool` array arrives as `{:u, 8}`, as Nx keeps booleans.
  """

  import Bitwise

  @enforce_keys [:type, :shape, :data]
  defstruct [:type, :shape, :data]

  @typedoc "An element type in Nx's notation."
  @type type ::
          {:s, 8 | 16 | 32 | 64}
          | {:u, 8 | 16 | 32 | 64}
          | {:f, 8 | 16 | 32 | 64}
          | {:bf, 16}
          | {:c, 64 | 128}

  @type element :: number() | :nan | :infinity | :neg_infinity | {number(), number()}

  @type t :: %__MODULE__{type: type(), shape: tuple(), data: binary()}

  @types [s: [8, 16, 32, 64], u: [8, 16, 32, 64], f: [8, 16, 32, 64], bf: [16], c: [64, 128]]

  @doc """
  The tensor's elements as nested lists, one level per dimension (a bare
  element for shape `{}`).

      iex> Snakepit.Tensor.to_list(%Snakepit.Tensor{type: {:s, 8}, shape: {2, 2}, data: <<1, 2, 3, 255>>})
      [[1, 2], [3, -1]]
  """
  @spec to_list(t()) :: element() | list()
  def to_list(%__MODULE__{type: type, shape: shape, data: data} = tensor)
      when is_tuple(shape) and is_binary(data) do
    check_type!(type)
    dims = Tuple.to_list(shape)
    count = Enum.reduce(dims, 1, &(&1 * &2))

    if count * bits(type) != bit_size(data) do
      raise ArgumentError,
            "the data does not hold #{count} elements of #{inspect(type)}, got: #{inspect(tensor, limit: 5)}"
    end

    elements = decode(data, type, [])

    case dims do
      [] -> hd(elements)
      _ -> nest(elements, dims)
    end
  end

  @doc """
  A tensor of `type` holding `list`'s elements: nested lists of equal
  lengths (their nesting gives the shape) or a bare element (shape `{}`).

  Integers are accepted for float types; floats are rounded to the
  nearest value of a narrow float type.

  ## Examples

      iex> Snakepit.Tensor.from_list([[1, 2], [3, 4]], {:u, 8})
      %Snakepit.Tensor{type: {:u, 8}, shape: {2, 2}, data: <<1, 2, 3, 4>>}

      iex> Snakepit.Tensor.from_list([1.0, :nan], {:f, 32}).data
      <<0, 0, 128, 63, 0, 0, 192, 127>>
  """
  @spec from_list(element() | list(), type()) :: t()
  def from_list(list, type) do
    check_type!(type)
    shape = shape_of(list, list)
    elements = if is_list(list), do: List.flatten(list), else: [list]
    data = elements |> Enum.map(&encode(&1, type, list)) |> IO.iodata_to_binary()
    %__MODULE__{type: type, shape: List.to_tuple(shape), data: data}
  end

  if Code.ensure_loaded?(Nx) do
    @doc "The tensor as an `Nx.Tensor` (no element is touched on a little-endian machine)."
    @spec to_nx(t()) :: Nx.Tensor.t()
    def to_nx(%__MODULE__{type: type, shape: shape, data: data}) do
      data |> native(type) |> Nx.from_binary(type) |> Nx.reshape(shape)
    end

    @doc "An `Nx.Tensor` as a `Snakepit.Tensor`, to send to a worker."
    @spec from_nx(Nx.Tensor.t()) :: t()
    def from_nx(tensor) do
      type = Nx.type(tensor)
      data = tensor |> Nx.to_binary() |> native(type)
      %__MODULE__{type: type, shape: Nx.shape(tensor), data: data}
    end
  end

  @doc false
  # Little-endian data to native order and back (the same swap both ways);
  # Nx keeps tensors in the machine's own byte order.
  @spec native(binary(), type()) :: binary()
  def native(data, type, endian \\ :erlang.system_info(:endian))
  def native(data, _type, :little), do: data

  def native(data, type, :big) do
    size = div(bits(type), if(elem(type, 0) == :c, do: 2, else: 1))
    for <<x::little-size(size) <- data>>, into: <<>>, do: <<x::big-size(size)>>
  end

  # --- types ---

  defp check_type!({kind, size} = type) when is_atom(kind) and is_integer(size) do
    if size in Keyword.get(@types, kind, []) do
      type
    else
      raise ArgumentError, "not a tensor type, got: #{inspect(type)}"
    end
  end

  defp check_type!(type), do: raise(ArgumentError, "not a tensor type, got: #{inspect(type)}")

  defp bits({_, size}), do: size

  # --- decoding elements ---

  defp decode(<<>>, _type, acc), do: Enum.reverse(acc)

  defp decode(data, {:s, n} = type, acc) do
    <<x::signed-little-size(n), rest::binary>> = data
    decode(rest, type, [x | acc])
  end

  defp decode(data, {:u, n} = type, acc) do
    <<x::unsigned-little-size(n), rest::binary>> = data
    decode(rest, type, [x | acc])
  end

  defp decode(data, {:c, n} = type, acc) do
    half = div(n, 2)
    <<re::bits-size(half), im::bits-size(half), rest::binary>> = data
    decode(rest, type, [{float_of(re, half), float_of(im, half)} | acc])
  end

  defp decode(data, {:bf, 16} = type, acc) do
    <<x::bits-size(16), rest::binary>> = data
    decode(rest, type, [float_of(<<0, 0>> <> x, 32) | acc])
  end

  defp decode(data, {:f, 8} = type, acc) do
    <<x::bits-size(8), rest::binary>> = data
    decode(rest, type, [float_of(<<0>> <> x, 16) | acc])
  end

  defp decode(data, {:f, n} = type, acc) do
    <<x::bits-size(n), rest::binary>> = data
    decode(rest, type, [float_of(x, n) | acc])
  end

  # One little-endian IEEE 754 float of `size` bits; the BEAM has no NaN or infinity.
  defp float_of(bin, size) do
    case bin do
      <<x::float-little-size(size)>> ->
        x

      <<bits::little-size(size)>> ->
        mantissa = bits &&& (1 <<< (size - exponent_bits(size) - 1)) - 1

        cond do
          mantissa != 0 -> :nan
          bits >>> (size - 1) == 1 -> :neg_infinity
          true -> :infinity
        end
    end
  end

  defp exponent_bits(16), do: 5
  defp exponent_bits(32), do: 8
  defp exponent_bits(64), do: 11

  defp nest(elements, [_]), do: elements

  defp nest(elements, [outer | inner]) do
    chunk = Enum.reduce(inner, 1, &(&1 * &2))

    if chunk == 0 do
      # rows of nothing: their count is the outer dimension
      List.duplicate(nest([], inner), outer)
    else
      elements |> Enum.chunk_every(chunk) |> Enum.map(&nest(&1, inner))
    end
  end

  # --- encoding elements ---

  defp shape_of([], _whole), do: [0]

  defp shape_of([first | _] = list, whole) do
    inner = shape_of(first, whole)

    Enum.each(list, fn item ->
      if shape_of(item, whole) != inner do
        raise ArgumentError,
              "nested lists must have equal lengths (a rectangular shape), got: #{inspect(whole, limit: 10)}"
      end
    end)

    [length(list) | inner]
  end

  defp shape_of(_element, _whole), do: []

  defp encode(x, {:s, n}, _whole) when is_integer(x), do: <<x::signed-little-size(n)>>

  defp encode(x, {:u, n}, _whole) when is_integer(x) and x >= 0,
    do: <<x::unsigned-little-size(n)>>

  defp encode(x, {:c, n}, whole) do
    {re, im} = if is_tuple(x), do: x, else: {x, 0}
    half = div(n, 2)
    [encode(re, {:f, half}, whole), encode(im, {:f, half}, whole)]
  end

  defp encode(x, {:bf, 16}, whole) do
    <<bits::little-32>> = encode(x, {:f, 32}, whole)
    # round to nearest, ties to even; a NaN stays a NaN
    rounded = if nan32?(bits), do: 0x7FC00000, else: bits + 0x7FFF + (bits >>> 16 &&& 1)
    <<rounded >>> 16::little-16>>
  end

  defp encode(x, {:f, 8}, whole) do
    <<bits::little-16>> = encode(x, {:f, 16}, whole)
    rounded = if nan16?(bits), do: 0x7E00, else: bits + 0x7F + (bits >>> 8 &&& 1)
    <<rounded >>> 8::8>>
  end

  defp encode(x, {:f, n} = type, whole) when is_number(x) do
    <<x::float-little-size(n)>>
  rescue
    ArgumentError -> encode(if(x > 0, do: :infinity, else: :neg_infinity), type, whole)
  end

  defp encode(:nan, {:f, 16}, _whole), do: <<0x7E00::little-16>>
  defp encode(:nan, {:f, 32}, _whole), do: <<0x7FC00000::little-32>>
  defp encode(:nan, {:f, 64}, _whole), do: <<0x7FF8000000000000::little-64>>
  defp encode(:infinity, {:f, 16}, _whole), do: <<0x7C00::little-16>>
  defp encode(:infinity, {:f, 32}, _whole), do: <<0x7F800000::little-32>>
  defp encode(:infinity, {:f, 64}, _whole), do: <<0x7FF0000000000000::little-64>>
  defp encode(:neg_infinity, {:f, 16}, _whole), do: <<0xFC00::little-16>>
  defp encode(:neg_infinity, {:f, 32}, _whole), do: <<0xFF800000::little-32>>
  defp encode(:neg_infinity, {:f, 64}, _whole), do: <<0xFFF0000000000000::little-64>>

  defp encode(x, type, whole) do
    raise ArgumentError,
          "#{inspect(x)} is not an element of a #{inspect(type)} tensor, got: #{inspect(whole, limit: 10)}"
  end

  defp nan32?(bits), do: (bits &&& 0x7F800000) == 0x7F800000 and (bits &&& 0x7FFFFF) != 0
  defp nan16?(bits), do: (bits &&& 0x7C00) == 0x7C00 and (bits &&& 0x3FF) != 0
end
