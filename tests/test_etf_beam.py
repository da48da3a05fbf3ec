"""Round trips through the real BEAM: term_to_binary -> Python decode/encode -> binary_to_term.

The BEAM generates a few hundred random nested terms (bignums, floats, atoms,
UTF-8 and non-UTF-8 binaries, charlists, proper and improper lists, tuples,
maps, pids, refs, ports, funs), writes them as term_to_binary frames (plain,
OTP 26 style, compressed and with old floats); Python decodes and re-encodes
every one; a second BEAM run checks each re-encoded term is exactly (===) the
original.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from snakepit_py.codec import etf

pytestmark = [
    pytest.mark.beam,
    pytest.mark.skipif(
        shutil.which("erl") is None or shutil.which("elixir") is None,
        reason="needs erl and elixir on PATH",
    ),
]

TERMS = 400

# Map keys come from one family per map, so that no two keys collapse into one
# in Python (1, 1.0 and true; :a and "a").
ROUND_TRIP_EXS = r"""
defmodule EtfRoundTrip do
  import Bitwise

  @atoms [:ok, :error, :true, :false, :nil, :undefined, :"héllo", :"日本", :"with space", :""]
  @encodings [
    [],
    [minor_version: 2],
    [:compressed],
    [minor_version: 0],
    [compressed: 9, minor_version: 2]
  ]

  def main(["gen", dir, n, seed]) do
    :rand.seed(:exsss, {String.to_integer(seed), 17, 29})
    port = Port.open({:spawn, "true"}, [])
    frames =
      for i <- 1..String.to_integer(n) do
        opts = Enum.at(@encodings, rem(i, length(@encodings)))
        frame(:erlang.term_to_binary(term(4, port), opts))
      end
    File.write!(Path.join(dir, "in.bin"), frames)
  end

  def main(["check", dir]) do
    originals = frames(File.read!(Path.join(dir, "in.bin")))
    copies = frames(File.read!(Path.join(dir, "out.bin")))
    if length(originals) != length(copies) do
      fail("#{length(copies)} copies for #{length(originals)} terms")
    end

    bad =
      for {orig, copy} <- Enum.zip(originals, copies),
          a = :erlang.binary_to_term(orig),
          b = :erlang.binary_to_term(copy),
          a !== b,
          do: {a, b}
    if bad != [], do: fail("#{length(bad)} mismatches, first: #{inspect(hd(bad), limit: 50)}")
    IO.puts("ok #{length(originals)}")
  end

  defp fail(message) do
    IO.puts(message)
    System.halt(1)
  end

  defp frame(bin), do: [<<byte_size(bin)::32>>, bin]
  defp frames(<<>>), do: []
  defp frames(<<size::32, bin::binary-size(size), rest::binary>>), do: [bin | frames(rest)]

  defp term(0, port), do: leaf(port)

  defp term(depth, port) do
    case :rand.uniform(10) do
      n when n <= 4 -> leaf(port)
      5 -> for _ <- count(), do: term(depth - 1, port)
      6 -> List.to_tuple(for _ <- count(), do: term(depth - 1, port))
      7 -> map(:rand.uniform(4), depth, port)
      8 -> Enum.reduce(count(), leaf(port), fn _, tail -> [term(depth - 1, port) | tail] end)
      9 -> for _ <- count(), do: :rand.uniform(256) - 1
      10 -> List.to_tuple(for _ <- 1..(250 + :rand.uniform(10)), do: leaf(port))
    end
  end

  defp map(family, depth, port) do
    Map.new(count(), fn _ -> {key(family), term(depth - 1, port)} end)
  end

  defp key(1), do: :rand.uniform(1_000_000) - 500_000
  defp key(2), do: utf8()
  defp key(3), do: Enum.random(@atoms -- [true, false, nil])
  defp key(4), do: {:rand.uniform(100), utf8()}

  defp count, do: Enum.take(1..5, :rand.uniform(6) - 1)

  defp leaf(port) do
    case :rand.uniform(14) do
      1 -> :rand.uniform(256) - 1
      2 -> :rand.uniform(1 <<< 32) - (1 <<< 31)
      3 -> (:rand.uniform(1 <<< :rand.uniform(2100)) - 1) * Enum.random([1, -1])
      4 -> (:rand.uniform() - 0.5) * :math.pow(10, :rand.uniform(600) - 300)
      5 -> Enum.random(@atoms)
      6 -> utf8()
      7 -> :rand.bytes(:rand.uniform(20))
      8 -> ""
      9 -> []
      10 -> self()
      11 -> make_ref()
      12 -> port
      13 -> Enum.random([&:erlang.abs/1, fn x -> {x, port} end, fn -> :ok end])
      14 -> {}
    end
  end

  defp utf8 do
    for _ <- 0..:rand.uniform(12), into: "" do
      <<Enum.random([?a, ?z, ?0, ?\s, 0xE9, 0x65E5, 0x1F40D, 0x7FF, 0xFFFD])::utf8>>
    end
  end
end

EtfRoundTrip.main(System.argv())
"""


def _frames(data: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        frames.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return frames


def _elixir(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["elixir", str(script), *args], capture_output=True, text=True, timeout=60
    )


def test_random_beam_terms_survive_python_round_trip(tmp_path: Path) -> None:
    # Given a few hundred random terms written by the real term_to_binary,
    script = tmp_path / "round_trip.exs"
    script.write_text(ROUND_TRIP_EXS)
    gen = _elixir(script, "gen", str(tmp_path), str(TERMS), "20240601")
    assert gen.returncode == 0, gen.stdout + gen.stderr
    originals = _frames((tmp_path / "in.bin").read_bytes())
    assert len(originals) == TERMS

    # when Python decodes and re-encodes each of them,
    copies = []
    for original in originals:
        copy = etf.encode(etf.decode(original))
        copies.append(struct.pack(">I", len(copy)) + copy)
    (tmp_path / "out.bin").write_bytes(b"".join(copies))

    # then the BEAM reads back exactly (===) the term it wrote.
    check = _elixir(script, "check", str(tmp_path))
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == f"ok {TERMS}"
