defmodule Snakepit.RayProxyTest do
  # The bundled Ray proxy (snakepit_py.ray_proxy) driven from the BEAM with
  # Snakepit.call and Snakepit.Stream. Starts a private local Ray (slow);
  # skip with `mix test --exclude ray`.
  use ExUnit.Case, async: false

  alias Snakepit.Error

  @moduletag :ray
  @moduletag timeout: 180_000

  @tasks Path.expand("../../tests/ray_tasks.py", __DIR__)

  setup_all do
    pool = :ray_proxy_test

    start_supervised!(
      {Snakepit.Pool,
       name: pool,
       target: "snakepit_py.ray_proxy",
       size: 1,
       start_timeout: 60_000,
       worker_args: ["--ray-address", "local", "--num-cpus", "2", "--tasks", @tasks]}
    )

    {:ok, health} = Snakepit.call(pool, %{method: "connect"}, timeout: 120_000)
    assert health["ray"]["connected"]
    %{pool: pool}
  end

  defp collect(acc \\ []) do
    receive do
      {:ray, {:data, chunk}} -> collect([chunk | acc])
      {:ray, terminal} -> {Enum.reverse(acc), terminal}
    after
      60_000 -> flunk("results stream did not end; got #{inspect(Enum.reverse(acc))}")
    end
  end

  describe "submit/results/status" do
    test "results stream in as each replica completes, then the summary", %{pool: pool} do
      request = %{method: "submit", args: ["square", [7]], kwargs: %{num_replicas: 3}}
      assert {:ok, job} = Snakepit.call(pool, request, timeout: 30_000)

      test = self()

      {:ok, _ref} =
        Snakepit.Stream.open(pool, %{method: "results", args: [job]}, &send(test, {:ray, &1}))

      assert {chunks, {:end, summary}} = collect()
      assert Enum.map(chunks, & &1["result"]) == [49, 49, 49]
      assert Enum.sort(Enum.map(chunks, & &1["index"])) == [0, 1, 2]
      assert %{"status" => "complete", "completed" => 3, "total" => 3} = summary

      assert {:ok, %{"status" => "complete"}} =
               Snakepit.call(pool, %{method: "get_job_status", args: [job]})
    end

    test "submit_ray_job blocks and a failing task brings its traceback", %{pool: pool} do
      assert {:ok, %{"results" => [4, 4], "status" => "complete"}} =
               Snakepit.call(pool, %{method: "submit_ray_job", args: ["square", [2], 2]},
                 timeout: 30_000
               )

      assert {:error, %Error{kind: :exception, type: "TaskFailed"} = e} =
               Snakepit.call(pool, %{method: "submit_ray_job", args: ["fail", ["boom"]]},
                 timeout: 30_000
               )

      assert e.traceback =~ "ValueError: boom"
    end

    test "a task that was never registered is refused", %{pool: pool} do
      assert {:error, %Error{type: "UnknownTask"}} =
               Snakepit.call(pool, %{method: "submit", args: ["os.system", ["true"]]})
    end
  end
end
