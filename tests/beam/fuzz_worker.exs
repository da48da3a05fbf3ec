# A bounded fuzz of a snakepit_py worker through a real Port (driven by tests/test_fuzz_beam.py).
#
#     elixir tests/beam/fuzz_worker.exs [--frames N] [--seed S] [--probe-every K]
#         [--python PATH] [--worker PATH] [--max-frame BYTES] [--rss-slack-mib M]
#         [--dump PATH]
#
# Sends N frames built from protocol envelopes and random terms, most of them
# mutated: bit flips, truncations, splices of two frames, random bytes,
# inserted or deleted runs, sizes and arities inside the term that lie,
# compressed terms (valid, with a lying size, a damaged deflate stream or a
# mutated term inside), frames just over --max-frame and compression bombs.
# The worker must
#
#   * answer a probe (an add, an echo or a health request) every K frames,
#     exactly and within 15 s;
#   * send only frames that decode with binary_to_term(_, [:safe]) into a
#     known reply;
#   * keep its RSS (VmRSS of the pid its :ready names) within --rss-slack-mib
#     of its RSS after a warm-up, and within a quarter of that over the
#     second half of the run;
#   * answer {:shutdown, _} at the end with :bye and exit status 0.
#
# Prints one line `FUZZ_SUMMARY {json}` and exits 0 (all held) or 1. On a
# failure the frames sent since the last good probe but one go to --dump,
# each behind its 4-byte length.

defmodule FuzzWorker.Etf do
  @moduledoc false
  # Where the length fields (sizes, arities, counts) of an external-format
  # term are, so that a mutation can make one of them lie.

  import Bitwise

  @doc "The {offset, width} of every length field in `bin`, as far as it parses."
  def length_fields(<<131, 80, _size::32, _::binary>>), do: [{2, 4}]
  def length_fields(bin), do: for({_, _} = field <- parts(bin), do: field)

  @doc "The bytes of every pid, port and reference in `bin`, as far as it parses."
  def opaques(<<131, 80, _::binary>>), do: []

  def opaques(bin),
    do:
      for(
        {:opaque, start, stop} <- parts(bin),
        stop <= byte_size(bin),
        do: binary_part(bin, start, stop - start)
      )

  defp parts(<<131, _::binary>> = bin) do
    case walk(bin, 1, []) do
      {:ok, _pos, acc} -> acc
      {:error, acc} -> acc
    end
  end

  defp parts(_), do: []

  @doc "`bin` with the field at `{offset, width}` set to `value` (wrapped to the width)."
  def put_field(bin, {offset, width}, value) do
    <<head::binary-size(offset), _::binary-size(width), tail::binary>> = bin
    bits = width * 8
    wrapped = value &&& (1 <<< bits) - 1
    <<head::binary, wrapped::size(bits), tail::binary>>
  end

  def get_field(bin, {offset, width}), do: uint(bin, offset, width)

  defp uint(bin, pos, width) when pos + width <= byte_size(bin),
    do: :binary.decode_unsigned(binary_part(bin, pos, width))

  defp uint(_bin, _pos, _width), do: nil

  defp walk(bin, pos, acc) when pos >= byte_size(bin), do: {:error, acc}

  defp walk(bin, pos, acc) do
    p = pos + 1

    case :binary.at(bin, pos) do
      97 -> {:ok, p + 1, acc}
      98 -> {:ok, p + 4, acc}
      70 -> {:ok, p + 8, acc}
      99 -> {:ok, p + 31, acc}
      106 -> {:ok, p, acc}
      tag when tag in [100, 107, 118] -> sized(bin, p, 2, 0, acc)
      tag when tag in [115, 119] -> sized(bin, p, 1, 0, acc)
      109 -> sized(bin, p, 4, 0, acc)
      77 -> sized(bin, p, 4, 1, acc)
      110 -> sized(bin, p, 1, 1, acc)
      111 -> sized(bin, p, 4, 1, acc)
      104 -> counted(bin, p, 1, 1, acc)
      105 -> counted(bin, p, 4, 1, acc)
      108 -> counted(bin, p, 4, 1, acc, 1)
      116 -> counted(bin, p, 4, 2, acc)
      88 -> opaque(pos, after_atom(bin, p, 12, acc))
      103 -> opaque(pos, after_atom(bin, p, 9, acc))
      89 -> opaque(pos, after_atom(bin, p, 8, acc))
      120 -> opaque(pos, after_atom(bin, p, 12, acc))
      102 -> opaque(pos, after_atom(bin, p, 5, acc))
      90 -> opaque(pos, ref(bin, p, 4, acc))
      114 -> opaque(pos, ref(bin, p, 1, acc))
      112 -> fun(bin, p, acc)
      113 -> items(bin, p, 3, acc)
      _ -> {:error, acc}
    end
  end

  defp opaque(start, {:ok, stop, acc}), do: {:ok, stop, [{:opaque, start, stop} | acc]}
  defp opaque(_start, error), do: error

  # A width-byte length n, `extra` bytes, then n bytes of payload.
  defp sized(bin, p, width, extra, acc) do
    case uint(bin, p, width) do
      nil -> {:error, acc}
      n -> {:ok, p + width + extra + n, [{p, width} | acc]}
    end
  end

  # A width-byte count n, then n * per terms (plus `more`, a list's tail).
  defp counted(bin, p, width, per, acc, more \\ 0) do
    case uint(bin, p, width) do
      nil -> {:error, acc}
      n -> items(bin, p + width, n * per + more, [{p, width} | acc])
    end
  end

  defp items(_bin, pos, 0, acc), do: {:ok, pos, acc}

  defp items(bin, pos, n, acc) do
    case walk(bin, pos, acc) do
      {:ok, next, acc} -> items(bin, next, n - 1, acc)
      error -> error
    end
  end

  defp after_atom(bin, p, skip, acc) do
    case walk(bin, p, acc) do
      {:ok, next, acc} -> {:ok, next + skip, acc}
      error -> error
    end
  end

  # NEWER_REFERENCE_EXT / NEW_REFERENCE_EXT: a 2-byte word count, node, creation, words.
  defp ref(bin, p, creation, acc) do
    case uint(bin, p, 2) do
      nil -> {:error, acc}
      n -> after_atom(bin, p + 2, creation + 4 * n, [{p, 2} | acc])
    end
  end

  # NEW_FUN_EXT: its 4-byte size counts itself and everything after it.
  defp fun(bin, p, acc) do
    case uint(bin, p, 4) do
      nil -> {:error, acc}
      size -> {:ok, p + size, [{p, 4} | acc]}
    end
  end
end

defmodule FuzzWorker.Gen do
  @moduledoc false
  # Protocol envelopes and random terms. Method names come from a whitelist
  # of the fuzz fixture's methods (all fast and bounded), plus two that do
  # not exist; the atom :shutdown is never generated.

  import Bitwise

  @methods ~w(add echo text raw fail async_add count async_count missing _private)
  @atoms [:ok, :error, true, false, nil, :undefined, :héllo, :日本, :"with space", :""]
  @encodings [[], [minor_version: 2], [minor_version: 0], [:compressed], [compressed: 9]]

  def encode(term), do: :erlang.term_to_binary(term, Enum.random(@encodings))

  def envelope(port) do
    case :rand.uniform(20) do
      n when n <= 11 -> call(port)
      n when n <= 13 -> {:cancel, id()}
      n when n <= 15 -> {:credit, id(), Enum.random([0, 1, 8, 1000, -1, 1 <<< 70])}
      16 -> {:health, id()}
      17 -> {:describe, id()}
      18 -> Enum.random([{:call, id()}, {:cancel}, {:credit, id()}, {:health}, {:ping, id()}])
      _ -> term(3, port)
    end
  end

  # Ids overlap on purpose (cancels and credits find calls in flight, some
  # calls reuse an id in flight); a few are negative or bignums.
  defp id do
    case :rand.uniform(40) do
      1 -> -:rand.uniform(5)
      2 -> 1 <<< (64 + :rand.uniform(64))
      _ -> :rand.uniform(512) - 1
    end
  end

  defp call(port) do
    name = Enum.random(@methods)
    {args, kwargs} = arguments(name, port)
    method = if :rand.uniform(8) == 1, do: String.to_atom(name), else: name
    {:call, id(), method, args, kwargs, opts()}
  end

  defp arguments(name, port) do
    case {:rand.uniform(8), name} do
      {1, _} -> {for(_ <- count(), do: term(2, port)), %{utf8() => term(2, port)}}
      {_, m} when m in ["add", "async_add"] -> {[int(), int()], %{}}
      {_, "echo"} -> {[term(4, port)], %{}}
      {_, "text"} -> {[utf8()], Enum.random([%{}, %{"sep" => utf8()}, %{sep: "-"}])}
      {_, "raw"} -> {[:rand.bytes(:rand.uniform(64))], %{}}
      {_, "fail"} -> Enum.random([{[], %{}}, {[utf8()], %{}}, {[], %{"message" => utf8()}}])
      {_, m} when m in ["count", "async_count"] -> {[:rand.uniform(12) - 1], %{}}
      _ -> {[], %{}}
    end
  end

  # Credit only for a stream's whole length, so that no valid call waits for
  # credit that never comes (mutations may still make it so: the fixture's
  # 1 s timeout frees such a call).
  defp opts do
    case :rand.uniform(6) do
      1 -> %{timeout_ms: :rand.uniform(2000)}
      2 -> %{credit: Enum.random([8, 100])}
      3 -> %{meta: %{"trace" => utf8(), "n" => :rand.uniform(100)}}
      4 -> %{timeout_ms: 500, credit: 100, meta: %{}}
      _ -> %{}
    end
  end

  def term(0, port), do: leaf(port)

  def term(depth, port) do
    case :rand.uniform(10) do
      n when n <= 4 -> leaf(port)
      5 -> for _ <- count(), do: term(depth - 1, port)
      6 -> List.to_tuple(for _ <- count(), do: term(depth - 1, port))
      7 -> Map.new(count(), fn _ -> {utf8(), term(depth - 1, port)} end)
      8 -> Enum.reduce(count(), leaf(port), fn _, tail -> [term(depth - 1, port) | tail] end)
      9 -> for _ <- count(), do: :rand.uniform(256) - 1
      10 -> List.to_tuple(for _ <- 1..(250 + :rand.uniform(10)), do: leaf(port))
    end
  end

  defp count, do: Enum.take(1..5, :rand.uniform(6) - 1)

  defp int do
    case :rand.uniform(4) do
      1 -> :rand.uniform(256) - 1
      2 -> :rand.uniform(1 <<< 32) - (1 <<< 31)
      3 -> (:rand.uniform(1 <<< :rand.uniform(300)) - 1) * Enum.random([1, -1])
      4 -> :rand.uniform(1000)
    end
  end

  defp leaf(port) do
    case :rand.uniform(15) do
      n when n <= 3 -> int()
      4 -> (:rand.uniform() - 0.5) * :math.pow(10, :rand.uniform(600) - 300)
      5 -> Enum.random(@atoms)
      6 -> utf8()
      7 -> :rand.bytes(:rand.uniform(20))
      8 -> ""
      9 -> []
      10 -> self()
      11 -> make_ref()
      12 -> port
      13 -> Enum.random([&:erlang.abs/1, fn x -> {x, port} end])
      14 -> {}
      15 -> <<:rand.uniform(255)::size(:rand.uniform(7))>>
    end
  end

  def utf8 do
    for _ <- 0..:rand.uniform(12), into: "" do
      <<Enum.random([?a, ?z, ?0, ?\s, 0xE9, 0x65E5, 0x1F40D, 0x7FF, 0xFFFD])::utf8>>
    end
  end
end

defmodule FuzzWorker.Mutate do
  @moduledoc false
  # Turns valid frames into hostile ones. Every function takes and returns
  # the bytes of one frame (the Port adds the 4-byte length itself).

  import Bitwise
  alias FuzzWorker.Etf

  def bit_flips(<<>>), do: <<>>

  def bit_flips(bin) do
    Enum.reduce(1..Enum.random([1, 1, 2, 3, 8]), bin, fn _, acc ->
      at = :rand.uniform(byte_size(acc)) - 1
      <<head::binary-size(at), byte, tail::binary>> = acc
      <<head::binary, bxor(byte, 1 <<< (:rand.uniform(8) - 1)), tail::binary>>
    end)
  end

  def truncate(bin), do: binary_part(bin, 0, :rand.uniform(byte_size(bin)) - 1)

  def splice(a, b) do
    cut_a = :rand.uniform(byte_size(a) + 1) - 1
    cut_b = :rand.uniform(byte_size(b) + 1) - 1
    binary_part(a, 0, cut_a) <> binary_part(b, cut_b, byte_size(b) - cut_b)
  end

  def random_bytes do
    bytes = :rand.bytes(:rand.uniform(64) - 1)

    case :rand.uniform(3) do
      1 -> bytes
      2 -> <<131, bytes::binary>>
      3 -> <<131, Enum.random([80, 104, 108, 109, 116, 110, 111, 77, 112]), bytes::binary>>
    end
  end

  # Insert random bytes, delete a run, or repeat one.
  def insert_delete(bin) do
    at = :rand.uniform(byte_size(bin) + 1) - 1
    len = min(:rand.uniform(8), byte_size(bin) - at)
    <<head::binary-size(at), run::binary-size(len), tail::binary>> = bin

    case :rand.uniform(3) do
      1 -> <<head::binary, :rand.bytes(:rand.uniform(8))::binary, run::binary, tail::binary>>
      2 -> <<head::binary, tail::binary>>
      3 -> <<head::binary, run::binary, run::binary, run::binary, tail::binary>>
    end
  end

  # One size, arity or count inside the term now claims something else:
  # off by one, zero, doubled, the frame's own size or the field's maximum.
  def bad_length(bin) do
    case Etf.length_fields(bin) do
      [] ->
        bit_flips(bin)

      fields ->
        field = {_, width} = Enum.random(fields)
        old = Etf.get_field(bin, field)
        max = (1 <<< (8 * width)) - 1
        choices = [0, 1, old - 1, old + 1, 2 * old, old + 4096, byte_size(bin), max, max - 1]
        value = Enum.random([1 <<< (8 * width - 1), :rand.uniform(max + 1) - 1 | choices])
        Etf.put_field(bin, field, value)
    end
  end

  # A compressed term (COMPRESSED = 80) of whatever `inner` is, with a true size.
  def compress(<<131, 80, _::binary>> = bin), do: bin

  def compress(<<131, inner::binary>>),
    do: <<131, 80, byte_size(inner)::32, :zlib.compress(inner)::binary>>

  def compress(bin), do: bin

  # A compressed frame whose deflate stream or size claim is damaged.
  def damage_compressed(<<131, 80, size::32, body::binary>> = bin) do
    case :rand.uniform(4) do
      1 -> <<131, 80, size::32, bit_flips(body)::binary>>
      2 -> truncate(bin)
      3 -> bad_length(bin)
      4 -> <<131, 80, size::32, body::binary, :rand.bytes(:rand.uniform(16))::binary>>
    end
  end

  def damage_compressed(bin), do: bit_flips(bin)
end

defmodule FuzzWorker do
  @moduledoc false

  import Bitwise
  alias FuzzWorker.{Gen, Mutate}

  @switches [
    frames: :integer,
    seed: :integer,
    probe_every: :integer,
    python: :string,
    worker: :string,
    max_frame: :integer,
    rss_slack_mib: :integer,
    dump: :string
  ]
  @probe_base 1 <<< 40
  @probe_timeout_ms 15_000
  @warmup_frames 500
  @replies [:ok, :error, :chunk, :health, :describe, :event, :log]

  # [:safe] decodes only atoms that exist, as in a real supervisor, whose code
  # names the ones docs/protocol.md defines; naming them here creates them.
  @protocol_atoms ~w(ready bye protocol pid worker_id python version methods threads
    max_inflight status healthy busy draining uptime_ms memory_mb inflight served failed
    loaded_models extra name doc params required default annotation streaming async
    timeout_ms kind type message traceback details known signature reason exception
    unknown_method bad_arguments timeout cancelled unencodable bad_request overloaded
    shutting_down debug info warning critical logger call_id meta credit)a

  @doc "The atoms of the protocol (named here so that they exist)."
  def protocol_atoms, do: @protocol_atoms

  def main(argv) do
    {opts, rest, bad} = OptionParser.parse(argv, strict: @switches)

    if rest != [] or bad != [] do
      raise ArgumentError, "unknown arguments, got: #{inspect(rest ++ bad)}"
    end

    cfg = %{
      frames: Keyword.get(opts, :frames, 50_000),
      seed: Keyword.get(opts, :seed, 1),
      probe_every: Keyword.get(opts, :probe_every, 50),
      python: Keyword.get(opts, :python, ".venv/bin/python"),
      worker: Keyword.get(opts, :worker, "tests/workers/fuzz.py"),
      max_frame: Keyword.get(opts, :max_frame, 1 <<< 20),
      rss_slack_kib: Keyword.get(opts, :rss_slack_mib, 64) * 1024,
      dump: Keyword.get(opts, :dump, Path.join(System.tmp_dir!(), "snakepit_fuzz_failure.bin"))
    }

    :rand.seed(:exsss, {cfg.seed, 7, 1_234_567})
    summary = run(cfg)
    IO.puts("FUZZ_SUMMARY " <> json(summary))
    System.halt(if summary.result == "pass", do: 0, else: 1)
  end

  defp run(cfg) do
    started = System.monotonic_time(:millisecond)
    python = System.find_executable(cfg.python) || Path.expand(cfg.python)

    port =
      Port.open({:spawn_executable, python}, [
        :binary,
        {:packet, 4},
        :nouse_stdio,
        :exit_status,
        args:
          ["-m", "snakepit_py", "worker", cfg.worker, "--threads", "2"] ++
            ["--max-frame", Integer.to_string(cfg.max_frame)]
      ])

    st = %{
      cfg: cfg,
      port: port,
      os_pid: nil,
      port_os_pid: elem(Port.info(port, :os_pid), 1),
      sent: 0,
      skipped: %{},
      kinds: %{},
      replies: %{},
      undecodable: [],
      invalid_opaque_echoes: %{count: 0, first: []},
      unexpected: [],
      probes: 0,
      failure: nil,
      batch: [],
      previous: [],
      rss: %{}
    }

    st =
      with {:ok, st} <- await_ready(st),
           {:ok, st} <- warm_up(st),
           {:ok, st} <- fuzz(st, cfg.frames),
           {:ok, st} <- probe(st),
           st = sample(st, :final),
           {:ok, st} <- shut_down(st) do
        st
      else
        {:error, st} -> dump(st)
      end

    summarise(st, System.monotonic_time(:millisecond) - started)
  end

  defp await_ready(st) do
    receive do
      {port, {:data, bin}} when port == st.port ->
        case safe_decode(bin) do
          {:ok, {:ready, %{pid: pid}}} -> {:ok, sample(%{st | os_pid: pid}, :ready)}
          _ -> fail(st, "first frame is not :ready: #{Base.encode16(bin)}")
        end

      {port, {:exit_status, status}} when port == st.port ->
        fail(st, "worker exited with status #{status} before :ready")
    after
      30_000 -> fail(st, "no :ready within 30 s")
    end
  end

  # Valid frames of every kind first, so that the RSS baseline includes what
  # the first calls load (threads, the event loop, lazily imported modules).
  defp warm_up(st) do
    Enum.reduce_while(1..@warmup_frames, {:ok, st}, fn i, {:ok, st} ->
      Port.command(st.port, Gen.encode(Gen.envelope(st.port)))

      if rem(i, st.cfg.probe_every) == 0 do
        case probe(st) do
          {:ok, st} -> {:cont, {:ok, st}}
          error -> {:halt, error}
        end
      else
        {:cont, {:ok, st}}
      end
    end)
    |> case do
      {:ok, st} -> {:ok, sample(%{st | batch: [], previous: []}, :baseline)}
      error -> error
    end
  end

  defp fuzz(st, 0), do: {:ok, st}

  defp fuzz(st, left) do
    {kind, frame} = next_frame(st)

    case skip_reason(frame) do
      nil -> send_frame(st, kind, frame, left)
      reason -> fuzz(%{st | skipped: Map.update(st.skipped, reason, 1, &(&1 + 1))}, left)
    end
  end

  defp send_frame(st, kind, frame, left) do
    Port.command(st.port, frame)
    st = %{st | sent: st.sent + 1, batch: [frame | st.batch]}
    st = %{st | kinds: Map.update(st.kinds, kind, 1, &(&1 + 1))}

    if rem(st.sent, st.cfg.probe_every) != 0 do
      fuzz(st, left - 1)
    else
      case probe(st) do
        {:ok, st} ->
          st = if rem(st.probes, 100) == 0, do: sample(st, st.sent), else: st

          st =
            if st.rss[:middle] == nil and 2 * st.sent >= st.cfg.frames,
              do: sample(st, :middle),
              else: st

          fuzz(%{st | batch: [], previous: st.batch}, left - 1)

        error ->
          error
      end
    end
  end

  defp next_frame(st) do
    if rem(st.sent + 1, 2500) == 0 do
      oversize(st)
    else
      plain = Gen.encode(Gen.envelope(st.port))

      case :rand.uniform(100) do
        n when n <= 8 -> {:valid, plain}
        n when n <= 16 -> {:compressed, Mutate.compress(plain)}
        n when n <= 30 -> {:bit_flips, Mutate.bit_flips(plain)}
        n when n <= 40 -> {:truncated, Mutate.truncate(plain)}
        n when n <= 50 -> {:spliced, Mutate.splice(plain, Gen.encode(Gen.envelope(st.port)))}
        n when n <= 55 -> {:random_bytes, Mutate.random_bytes()}
        n when n <= 72 -> {:bad_length, Mutate.bad_length(plain)}
        n when n <= 78 -> {:compressed_bad_length, Mutate.compress(Mutate.bad_length(plain))}
        n when n <= 86 -> {:compressed_damaged, Mutate.damage_compressed(Mutate.compress(plain))}
        n when n <= 90 -> {:compressed_bit_flips, Mutate.compress(Mutate.bit_flips(plain))}
        _ -> {:inserted_deleted, Mutate.insert_delete(plain)}
      end
    end
  end

  # A frame just over --max-frame (refused and drained), or a small compressed
  # one that would inflate past it.
  defp oversize(st) do
    call = fn data -> {:call, :rand.uniform(512), "raw", [data], %{}, %{}} end
    big = :binary.copy(<<0xAB>>, st.cfg.max_frame + :rand.uniform(4096))

    if rem(st.sent + 1, 5000) == 0 do
      {:oversize, :erlang.term_to_binary(call.(big))}
    else
      {:compression_bomb, :erlang.term_to_binary(call.(big), compressed: 9)}
    end
  end

  # Frames not sent, and why. {:shutdown, _} would stop the worker, a
  # legitimate end; the generator never makes the atom, so only a mutation
  # could. Decoding here also creates the atoms a mutated frame names, as a
  # BEAM holding such a term would have them: the worker's echo of them must
  # then decode with [:safe]. A term that [:safe] refuses even so (a fun a
  # mutation changed: about 1 frame in 3 000) would make the oracle blame the
  # worker for echoing it faithfully, so it is not sent either.
  defp skip_reason(frame) do
    decoded = decode_bounded(frame)

    cond do
      shutdown?(frame) or shutdown?(decoded) -> :shutdown
      match?({:ok, _}, decoded) and not safe?(frame) -> :unsafe
      true -> nil
    end
  end

  defp shutdown?({:ok, term}),
    do: is_tuple(term) and tuple_size(term) > 0 and elem(term, 0) == :shutdown

  defp shutdown?({:inflated, bin}), do: shutdown?(bin)
  defp shutdown?(:error), do: false
  defp shutdown?(bin) when is_binary(bin), do: :binary.match(bin, "shutdown") != :nomatch

  defp safe?(frame), do: safe_decode(frame) != :error

  defp safe_decode(bin) do
    {:ok, :erlang.binary_to_term(bin, [:safe])}
  rescue
    ArgumentError -> :error
  end

  defp decode_bounded(<<131, 80, size::32, body::binary>> = frame) do
    inflated =
      try do
        :zlib.uncompress(body)
      rescue
        _ -> <<>>
      catch
        _, _ -> <<>>
      end

    # The BEAM would allocate `size` bytes for the inflated term: only ask
    # it to when the claim is modest; the inflated bytes are checked anyway.
    decoded = if size <= 4 * byte_size(frame) + 65_536, do: try_decode(frame), else: :error
    if decoded == :error, do: {:inflated, inflated}, else: decoded
  end

  defp decode_bounded(frame), do: try_decode(frame)

  defp try_decode(frame) do
    {:ok, :erlang.binary_to_term(frame)}
  rescue
    _ -> :error
  end

  defp probe(st) do
    n = st.probes + 1
    id = @probe_base + n

    {frame, match} =
      case rem(n, 3) do
        0 ->
          {{:call, id, "add", [n, 1_000_000], %{}, %{}},
           &match?({:ok, ^id, r} when r == n + 1_000_000, &1)}

        1 ->
          value = {n, "probé", [1.5, :ok, -n], %{"k" => <<255, n &&& 255>>}, <<0, 1>>}
          {{:call, id, "echo", [value], %{}, %{}}, &match?({:ok, ^id, ^value}, &1)}

        2 ->
          {{:health, id}, &match?({:health, ^id, %{status: s}} when s in [:healthy, :busy], &1)}
      end

    Port.command(st.port, :erlang.term_to_binary(frame))
    deadline = System.monotonic_time(:millisecond) + @probe_timeout_ms
    await_probe(%{st | probes: n}, id, match, deadline)
  end

  defp await_probe(st, id, match, deadline) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {port, {:data, bin}} when port == st.port ->
        case reply(st, bin) do
          {st, nil} ->
            await_probe(st, id, match, deadline)

          {st, term} ->
            cond do
              match.(term) -> {:ok, st}
              answers?(term, id) -> fail(st, "probe #{id} answered #{inspect(term, limit: 30)}")
              true -> await_probe(st, id, match, deadline)
            end
        end

      {port, {:exit_status, status}} when port == st.port ->
        fail(st, "worker exited with status #{status}")
    after
      left -> fail(st, "probe #{id} unanswered after #{@probe_timeout_ms} ms")
    end
  end

  defp answers?(term, id) when is_tuple(term) and tuple_size(term) >= 2, do: elem(term, 1) == id
  defp answers?(_term, _id), do: false

  # Checks one frame from the worker; returns the term, or nil if it failed.
  defp reply(st, bin) do
    term = :erlang.binary_to_term(bin, [:safe])

    tag =
      if is_tuple(term) and tuple_size(term) >= 2 and elem(term, 0) in @replies,
        do: elem(term, 0),
        else: nil

    tag = if tag == :error, do: {:error, error_kind(term)}, else: tag

    if tag do
      {%{st | replies: Map.update(st.replies, tag, 1, &(&1 + 1))}, term}
    else
      {%{st | unexpected: keep(st.unexpected, inspect(term, limit: 30))}, nil}
    end
  rescue
    ArgumentError ->
      if Enum.any?(FuzzWorker.Etf.opaques(bin), &(not decodes?(&1))) do
        echoes = %{st.invalid_opaque_echoes | count: st.invalid_opaque_echoes.count + 1}
        echoes = %{echoes | first: keep(echoes.first, Base.encode16(bin))}
        {%{st | invalid_opaque_echoes: echoes}, nil}
      else
        st = if st.undecodable == [], do: dump(st), else: st
        {%{st | undecodable: keep(st.undecodable, Base.encode16(bin))}, nil}
      end
  end

  # Whether the BEAM accepts a pid, port or reference on its own (atoms allowed).
  defp decodes?(opaque) do
    _ = :erlang.binary_to_term(<<131, opaque::binary>>)
    true
  rescue
    ArgumentError -> false
  end

  defp error_kind({:error, _id, %{kind: kind}}) when is_atom(kind), do: kind
  defp error_kind(_), do: :malformed

  defp keep(list, item) when length(list) < 5, do: list ++ [item]
  defp keep(list, _item), do: list

  defp shut_down(st) do
    Port.command(st.port, :erlang.term_to_binary({:shutdown, 2000}))
    await_bye(st, false, System.monotonic_time(:millisecond) + 10_000)
  end

  defp await_bye(st, bye?, deadline) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {port, {:data, bin}} when port == st.port ->
        case safe_decode(bin) do
          {:ok, {:bye, %{}}} -> await_bye(st, true, deadline)
          _ -> await_bye(elem(reply(st, bin), 0), bye?, deadline)
        end

      {port, {:exit_status, 0}} when port == st.port and bye? ->
        {:ok, st}

      {port, {:exit_status, status}} when port == st.port ->
        fail(st, "after :shutdown: exit status #{status}, :bye seen: #{bye?}")
    after
      left -> fail(st, "no exit within 10 s of :shutdown")
    end
  end

  defp sample(%{os_pid: nil} = st, _label), do: st

  defp sample(st, label) do
    rss =
      case File.read("/proc/#{st.os_pid}/status") do
        {:ok, status} ->
          [_, kib] = Regex.run(~r/VmRSS:\s+(\d+) kB/, status)
          String.to_integer(kib)

        {:error, _} ->
          nil
      end

    %{st | rss: Map.put(st.rss, label, rss)}
  end

  defp fail(st, message), do: {:error, %{st | failure: message}}

  defp dump(st) do
    frames = Enum.reverse(st.previous) ++ Enum.reverse(st.batch)
    File.write!(st.cfg.dump, Enum.map(frames, &[<<byte_size(&1)::32>>, &1]))
    IO.puts(:stderr, "#{length(frames)} frames since the last good probe but one: #{st.cfg.dump}")
    st
  end

  defp summarise(st, elapsed_ms) do
    rss = st.rss
    peak = rss |> Map.values() |> Enum.reject(&is_nil/1) |> Enum.max(fn -> nil end)

    rss_ok =
      is_integer(rss[:baseline]) and is_integer(rss[:final]) and
        rss.final <= rss.baseline + st.cfg.rss_slack_kib

    # A leak keeps growing; the allocator's kept memory does not.
    trend_ok =
      is_integer(rss[:middle]) and is_integer(rss[:final]) and
        rss.final <= rss.middle + div(st.cfg.rss_slack_kib, 4)

    failure =
      cond do
        st.failure -> st.failure
        st.undecodable != [] -> "replies that do not decode with [:safe]"
        st.unexpected != [] -> "replies that are not protocol messages"
        st.sent < st.cfg.frames -> "sent #{st.sent} of #{st.cfg.frames} frames"
        not rss_ok -> "RSS grew past the bound"
        not trend_ok -> "RSS still grew by more than a quarter of the bound in the second half"
        st.invalid_opaque_echoes.count > 0 -> "replies echo a pid, port or ref the BEAM refuses"
        true -> nil
      end

    %{
      result: if(failure, do: "fail", else: "pass"),
      failure: failure,
      seed: st.cfg.seed,
      frames_sent: st.sent,
      frames_skipped: st.skipped,
      probes_answered: if(st.failure, do: st.probes - 1, else: st.probes),
      elapsed_ms: elapsed_ms,
      kinds: st.kinds,
      replies: Map.new(st.replies, fn {k, v} -> {reply_label(k), v} end),
      undecodable: st.undecodable,
      invalid_opaque_echoes: st.invalid_opaque_echoes,
      unexpected: st.unexpected,
      rss_kib: %{
        ready: rss[:ready],
        baseline: rss[:baseline],
        peak: peak,
        middle: rss[:middle],
        final: rss[:final],
        bound: rss[:baseline] && rss.baseline + st.cfg.rss_slack_kib,
        every_5000_frames: for({n, kib} when is_integer(n) <- Enum.sort(rss), do: kib)
      },
      worker_pid: st.os_pid,
      port_os_pid: st.port_os_pid
    }
  end

  defp reply_label({:error, kind}), do: "error:#{kind}"
  defp reply_label(tag), do: tag

  defp json(map) when is_map(map) do
    body =
      map
      |> Enum.sort()
      |> Enum.map_join(",", fn {k, v} -> json(to_string(k)) <> ":" <> json(v) end)

    "{" <> body <> "}"
  end

  defp json(list) when is_list(list), do: "[" <> Enum.map_join(list, ",", &json/1) <> "]"
  defp json(nil), do: "null"
  defp json(bool) when is_boolean(bool), do: to_string(bool)
  defp json(atom) when is_atom(atom), do: json(Atom.to_string(atom))
  defp json(n) when is_integer(n), do: Integer.to_string(n)

  defp json(text) when is_binary(text) do
    escaped =
      for <<c::utf8 <- text>>, into: "" do
        case c do
          ?" -> "\\\""
          ?\\ -> "\\\\"
          c when c < 0x20 -> "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")
          c -> <<c::utf8>>
        end
      end

    "\"" <> escaped <> "\""
  end
end

FuzzWorker.main(System.argv())
