defmodule SnakepitTest do
  use ExUnit.Case, async: false

  import Snakepit.TestHelpers
  alias Snakepit.Error

  setup_all do
    name = unique_name("calls")
    {:ok, sup} = Snakepit.Pool.start_link(name: name, target: test_worker(), size: 2)

    on_exit(fn -> if Process.alive?(sup), do: Supervisor.stop(sup) end)
    Process.unlink(sup)
    %{pool: name}
  end

  describe "call/3" do
    test "returns the method's result", %{pool: pool} do
      assert {:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]})
    end

    test "passes kwargs and accepts atom method names", %{pool: pool} do
      assert {:ok, %{"args" => [1], "kwargs" => %{"x" => 2}}} =
               Snakepit.call(pool, %{method: :echo_kwargs, args: [1], kwargs: %{"x" => 2}})
    end

    test "hands :meta to the Python method", %{pool: pool} do
      assert {:ok, %{"trace" => "t-1"}} =
               Snakepit.call(pool, %{method: "meta"}, meta: %{"trace" => "t-1"})
    end

    test "a Python exception is {:error, kind: :exception} with type, message and traceback",
         %{pool: pool} do
      assert {:error, %Error{kind: :exception, type: "ValueError", message: "bad"} = error} =
               Snakepit.call(pool, %{method: "fail", args: ["bad"]})

      assert error.traceback =~ "raise ValueError(message)"
      assert Exception.message(error) =~ "Python ValueError: bad"
      assert Exception.message(error) =~ "Traceback"
    end

    test "an unknown method lists the known ones", %{pool: pool} do
      assert {:error, %Error{kind: :unknown_method, details: %{known: known}}} =
               Snakepit.call(pool, %{method: "nope"})

      assert "add" in known
    end

    test "arguments that do not bind are :bad_arguments with the signature", %{pool: pool} do
      assert {:error, %Error{kind: :bad_arguments, details: %{signature: sig}}} =
               Snakepit.call(pool, %{method: "add", args: [1]})

      assert sig =~ "add("
    end

    test "an annotation mismatch is :bad_arguments", %{pool: pool} do
      assert {:error, %Error{kind: :bad_arguments}} =
               Snakepit.call(pool, %{method: "add", args: ["one", 2]})
    end

    test "a result the codec cannot carry is :unencodable and the worker keeps serving",
         %{pool: pool} do
      assert {:error, %Error{kind: :unencodable}} = Snakepit.call(pool, %{method: "unencodable"})
      assert {:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]})
    end

    test "a term Python refuses (a bitstring) is :bad_request", %{pool: pool} do
      assert {:error, %Error{kind: :bad_request}} =
               Snakepit.call(pool, %{method: "echo", args: [<<1::3>>]})

      assert {:ok, "still here"} = Snakepit.call(pool, %{method: "echo", args: ["still here"]})
    end

    test "an unknown pool is :noproc" do
      assert {:error, %Error{kind: :noproc}} =
               Snakepit.call(:no_such_pool, %{method: "add", args: [1, 2]})
    end

    test "a bad request map raises ArgumentError naming what it got", %{pool: pool} do
      assert_raise ArgumentError, ~r/got: %\{args: \[\]\}/, fn ->
        Snakepit.call(pool, %{args: []})
      end

      assert_raise ArgumentError, ~r/unknown options \[:colour\]/, fn ->
        Snakepit.call(pool, %{method: "add"}, colour: :red)
      end
    end

    test "print() and raw writes to fds 1 and 2 in Python disturb nothing", %{pool: pool} do
      for _ <- 1..5 do
        assert {:ok, "noise"} = Snakepit.call(pool, %{method: "noisy", args: ["noise"]})
      end

      assert {:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]})
    end

    test "the caller's timeout returns :timeout, cancels the call and frees the worker" do
      pool = start_pool(size: 1)

      assert {:error, %Error{kind: :timeout}} =
               Snakepit.call(pool, %{method: "sleep", args: [30]}, timeout: 200)

      assert {:ok, 3} = Snakepit.call(pool, %{method: "add", args: [1, 2]}, timeout: 10_000)
    end

    test "a method's own timeout is a :timeout error from Python", %{pool: pool} do
      assert {:error, %Error{kind: :timeout}} = Snakepit.call(pool, %{method: "too_slow"})
    end
  end

  describe "call/3 round trip" do
    # Random nested terms from Elixir through Python's `echo` and back: equal.
    test "random nested terms come back identical", %{pool: pool} do
      seed = ExUnit.configuration()[:seed]
      :rand.seed(:exsss, {seed, 42, 7})

      for i <- 1..300 do
        term = Snakepit.TermGen.term(4)

        assert {:ok, back} = Snakepit.call(pool, %{method: "echo", args: [term]}),
               "sample #{i} (seed #{seed}) failed: #{inspect(term)}"

        assert back === term, """
        sample #{i} (seed #{seed}) changed in the round trip
          sent:     #{inspect(term, limit: :infinity)}
          received: #{inspect(back, limit: :infinity)}
        """
      end
    end

    test "edge values come back identical", %{pool: pool} do
      terms = [
        0,
        -1,
        2 ** 64,
        -(2 ** 200),
        1.5,
        1.0e300,
        "",
        "héllo ✓",
        <<0, 255, 128>>,
        [],
        ~c"charlist",
        [1 | 2],
        [1, 2 | "tail"],
        {},
        {:ok, 1},
        %{},
        %{"a" => 1, 2 => [3]},
        true,
        false,
        nil,
        :ok,
        :error,
        self(),
        make_ref(),
        :binary.copy("x", 100_000)
      ]

      for term <- terms do
        assert {:ok, back} = Snakepit.call(pool, %{method: "echo", args: [term]})
        assert back === term, "#{inspect(term)} came back as #{inspect(back)}"
      end
    end
  end
end
