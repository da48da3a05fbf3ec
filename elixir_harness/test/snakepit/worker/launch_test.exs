defmodule Snakepit.Worker.LaunchTest do
  # The command line only: nothing is started.
  use ExUnit.Case, async: true

  alias Snakepit.Options
  alias Snakepit.Worker.Launch

  describe "argv/2" do
    test "the target, the worker id, the worker options as flags, own args after --" do
      opts =
        Options.worker!(
          target: "w.py",
          python: "py",
          worker_opts: [threads: 2, max_inflight: 8, debug: true, quiet: false, codec: nil],
          worker_args: ["--model", "gpt2"]
        )

      assert ["-c", entry | rest] = Launch.argv(opts, "p-1")
      assert entry == "from snakepit_py.cli import main; raise SystemExit(main())"

      assert rest ==
               ~w(worker w.py --worker-id p-1 --threads 2 --max-inflight 8 --debug -- --model gpt2)
    end

    test "no id, no options, no own args" do
      opts = Options.worker!(target: "pkg.mod:Worker", python: "py")
      assert ["-c", _entry | ~w(worker pkg.mod:Worker)] = Launch.argv(opts, nil)
    end
  end
end
