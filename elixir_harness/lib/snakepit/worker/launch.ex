defmodule Snakepit.Worker.Launch do
  @moduledoc false
  # The command that starts one Python worker process from a worker's
  # options: what `python -m snakepit_py worker TARGET --flags... [-- own
  # args]` runs, as `python -c` (see @entry).

  alias Snakepit.OSProcess

  # The protocol this harness reads (docs/protocol.md, "Versions"): a worker
  # lists protocol 1.1's `features` in `:ready` only when told so, because a
  # 1.0 supervisor's `binary_to_term(_, [:safe])` would refuse their atoms.
  @protocol "1.1"

  # `-m snakepit_py` without runpy: `-m` imports importlib.util, contextlib and
  # collections before our first line, ~6 M instructions (~2 ms) of every
  # worker's start (benchmarks/bench_beam.exs). sys.path and the rest are as
  # with `-m`; only sys.argv[0] is "-c".
  @entry "from snakepit_py.cli import main; raise SystemExit(main())"

  @doc "Opens the Port running a fresh Python worker; its output goes to `log` unless nil."
  @spec open(keyword(), term(), String.t() | nil) :: port()
  def open(opts, worker_id, log) do
    OSProcess.open_port(opts[:python], argv(opts, worker_id),
      log: log && fresh_log(log),
      cd: opts[:cd],
      env: [{"SNAKEPIT_PROTOCOL", @protocol} | opts[:env] || []]
    )
  end

  @doc "The interpreter's arguments: `:worker_opts` become `--flags`, `:worker_args` follow `--`."
  @spec argv(keyword(), term()) :: [String.t()]
  def argv(opts, worker_id) do
    id_flag = if worker_id, do: ["--worker-id", to_string(worker_id)], else: []
    own_args = if opts[:worker_args] == [], do: [], else: ["--" | opts[:worker_args]]

    flags =
      Enum.flat_map(opts[:worker_opts], fn
        {_key, value} when value in [nil, false] -> []
        {key, true} -> [flag(key)]
        {key, value} -> [flag(key), to_string(value)]
      end)

    ["-c", @entry, "worker", opts[:target]] ++ id_flag ++ flags ++ own_args
  end

  defp flag(key), do: "--" <> String.replace(to_string(key), "_", "-")

  # A new file rather than a truncated one: a killed process that is still
  # going away may write a last line to the old one.
  defp fresh_log(log) do
    File.rm(log)
    log
  end
end
