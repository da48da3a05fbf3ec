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

      assert Launch.argv(opts, "p-1") ==
               ~w(-m snakepit_py worker w.py --worker-id p-1 --threads 2 --max-inflight 8 --debug
                  -- --model gpt2)
    end

    test "no id, no options, no own args" do
      opts = Options.worker!(target: "pkg.mod:Worker", python: "py")
      assert Launch.argv(opts, nil) == ~w(-m snakepit_py worker pkg.mod:Worker)
    end
  end
end
