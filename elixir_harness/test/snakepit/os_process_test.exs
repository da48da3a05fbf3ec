defmodule Snakepit.OSProcessTest do
  # Small shell programs stand in for Python workers: no Python here.
  use ExUnit.Case, async: true

  import Snakepit.TestHelpers
  alias Snakepit.OSProcess

  # A shell that runs `script` (with a child `sleep` so a tree exists); returns
  # {port, shell_os_pid, child_os_pid}.
  defp spawn_shell(script) do
    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        args: ["-c", script <> "; sleep 60 & echo started; wait"]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    assert_receive {^port, {:data, "started\n"}}, 10_000

    child = wait_until(fn -> List.first(OSProcess.descendants(os_pid)) end)
    {port, os_pid, child}
  end

  describe "terminate/2" do
    test "a process that ends on SIGTERM gets SIGTERM first" do
      marker = Path.join(System.tmp_dir!(), "snakepit-term-#{System.unique_integer([:positive])}")
      on_exit(fn -> File.rm(marker) end)
      {port, os_pid, child} = spawn_shell("trap 'echo term > #{marker}; kill $!; exit 0' TERM")

      assert OSProcess.terminate(port, {os_pid, os_pid}) == :ok
      assert_os_pid_exited(os_pid)
      assert_os_pid_exited(child)
      assert File.read!(marker) == "term\n"
    end

    test "a process that ignores SIGTERM is killed with its children" do
      {port, os_pid, child} = spawn_shell("trap '' TERM")
      assert OSProcess.terminate(port, {os_pid, os_pid}) == :ok
      assert_os_pid_exited(os_pid)
      assert_os_pid_exited(child)
    end

    test "with no port and no guard there is nothing to do" do
      assert OSProcess.terminate(nil, {nil, nil}) == :ok
    end
  end
end
