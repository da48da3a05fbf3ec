defmodule Snakepit.OptionsTest do
  # Validation only: no process is started, no Python runs.
  use ExUnit.Case, async: true

  alias Snakepit.Options

  describe "worker!/1" do
    test "fills in the defaults and the Python to run" do
      opts = Options.worker!(target: "w.py", python: "/usr/bin/python3.11")

      assert opts[:target] == "w.py"
      assert opts[:python] == "/usr/bin/python3.11"
      assert opts[:output] == :capture
      assert opts[:worker_opts] == []
      assert opts[:worker_args] == []

      for key <-
            [:start_timeout, :shutdown_grace, :cancel_grace, :health_interval] ++
              [:hung_after, :stable_after, :restart_window] do
        assert opts[key] == Options.default(key)
      end
    end

    test "keeps what was given" do
      opts =
        Options.worker!(
          target: "pkg.mod:Worker",
          python: "py",
          health_interval: nil,
          cancel_grace: :infinity,
          output: :inherit,
          worker_opts: [threads: 2],
          worker_args: ["--x"]
        )

      assert opts[:health_interval] == nil
      assert opts[:cancel_grace] == :infinity
      assert opts[:output] == :inherit
      assert opts[:worker_opts] == [threads: 2]
      assert opts[:worker_args] == ["--x"]
    end

    test "needs a keyword list and a non-empty :target" do
      assert_raise ArgumentError, ~r/expected a keyword list of options, got: %\{\}/, fn ->
        Options.worker!(%{})
      end

      assert_raise ArgumentError, ~r/:target must be a path or module string, got: nil/, fn ->
        Options.worker!([])
      end

      assert_raise ArgumentError, ~r/:target must be .*got: ""/, fn ->
        Options.worker!(target: "")
      end
    end

    test "names unknown options" do
      assert_raise ArgumentError, ~r/unknown worker options \[:size\], got: /, fn ->
        Options.worker!(target: "w.py", size: 2)
      end
    end

    test "every bad value is named with what it got" do
      for {key, bad, what} <- [
            {:worker_opts, [1], "a keyword list"},
            {:worker_args, [:a], "a list of strings"},
            {:output, :stdout, ":capture or :inherit"},
            {:start_timeout, -1, "a non-negative integer"},
            {:shutdown_grace, 1.5, "a non-negative integer"},
            {:stable_after, nil, "a non-negative integer"},
            {:restart_window, :none, "a non-negative integer"},
            {:hung_after, 0, "a positive integer"},
            {:hung_after, :none, "a positive integer"},
            {:health_interval, 0, "a positive integer or nil"},
            {:cancel_grace, :never, "a non-negative integer or :infinity"}
          ] do
        message = "#{inspect(key)} must be #{what}, got: #{inspect(bad)}"

        assert_raise ArgumentError, message, fn ->
          Options.worker!([{:target, "w.py"}, {key, bad}])
        end
      end
    end
  end

  describe "pool!/1" do
    test "fills in :size and leaves the workers' defaults to them" do
      opts = Options.pool!(name: :p, target: "w.py")
      assert opts[:size] == System.schedulers_online()
      refute Keyword.has_key?(opts, :start_timeout)
      assert Options.pool!(name: :p, target: "w.py", size: 3)[:size] == 3
    end

    test "checks :name and :size" do
      assert_raise ArgumentError, ~r/:name must be an atom, got: "x"/, fn ->
        Options.pool!(name: "x", target: "w.py")
      end

      assert_raise ArgumentError, ~r/:name must be an atom, got: nil/, fn ->
        Options.pool!(target: "w.py")
      end

      assert_raise ArgumentError, ~r/:size must be a positive integer, got: 0/, fn ->
        Options.pool!(name: :p, target: "w.py", size: 0)
      end
    end

    test "checks the workers' options too, with the same messages" do
      assert_raise ArgumentError, ~r/:target must be a path or module string, got: 1/, fn ->
        Options.pool!(name: :p, target: 1)
      end

      assert_raise ArgumentError, ~r/:hung_after must be a positive integer, got: 0/, fn ->
        Options.pool!(name: :p, target: "w.py", hung_after: 0)
      end
    end

    test "checks :distributed and :gossip_interval" do
      assert Options.pool!(name: :p, target: "w.py", distributed: true)[:distributed]

      assert_raise ArgumentError, ~r/:distributed must be a boolean, got: :yes/, fn ->
        Options.pool!(name: :p, target: "w.py", distributed: :yes)
      end

      assert_raise ArgumentError, ~r/:gossip_interval must be a positive integer, got: 0/, fn ->
        Options.pool!(name: :p, target: "w.py", distributed: true, gossip_interval: 0)
      end
    end

    test "names unknown options, a worker-only one included" do
      assert_raise ArgumentError, ~r/unknown pool options \[:worker_id\], got: /, fn ->
        Options.pool!(name: :p, target: "w.py", worker_id: "w")
      end
    end
  end

  describe "worker_keys/0" do
    test "what a pool hands each worker passes both checks" do
      handed = Keyword.take(Options.worker!(target: "w.py", python: "py"), Options.worker_keys())
      assert Keyword.keys(handed) -- Options.worker_keys() == []
      assert Options.pool!([name: :p, target: "w.py"] ++ handed)
      assert Options.worker!([target: "w.py", pool: :p, worker_id: "p-1"] ++ handed)
    end
  end
end
