defmodule Snakepit.OSProcess do
  @moduledoc false
  # Everything that touches the operating system: which Python to run, how to
  # launch it, whether an OS pid is still alive, signals, the stderr log.

  # elixir_harness/lib/snakepit -> the repository root
  @repo_root Path.expand("../../..", __DIR__)

  @doc "The Python to launch: `python:`, else $SNAKEPIT_PYTHON, else the repo's .venv, else python3."
  @spec python(String.t() | nil) :: String.t()
  def python(explicit \\ nil) do
    venv = Path.join(@repo_root, ".venv/bin/python")

    cond do
      is_binary(explicit) -> explicit
      (env = System.get_env("SNAKEPIT_PYTHON")) not in [nil, ""] -> env
      File.exists?(venv) -> venv
      found = System.find_executable("python3") -> found
      true -> "python3"
    end
  end

  @doc "The repository root (where `.venv` lives)."
  def repo_root, do: @repo_root

  @doc """
  Opens the port. With a `log` path the program runs through `/bin/sh`, which
  `exec`s it (same OS pid) with stdin from /dev/null and stdout and stderr
  appended to `log`, so its output can be quoted when it fails to start.
  """
  @spec open_port(String.t(), [String.t()], keyword()) :: port()
  def open_port(executable, args, opts) do
    {exe, argv} =
      case Keyword.get(opts, :log) do
        nil ->
          {executable, args}

        log ->
          script = ~S(log=$1; shift; exec "$@" </dev/null >>"$log" 2>&1)
          {"/bin/sh", ["-c", script, "sh", log, executable | args]}
      end

    port_opts =
      [:binary, {:packet, 4}, :exit_status, :nouse_stdio, args: argv] ++
        if(cd = opts[:cd], do: [cd: cd], else: []) ++
        if(env = opts[:env], do: [env: charlist_env(env)], else: [])

    Port.open({:spawn_executable, resolve(exe)}, port_opts)
  end

  defp resolve(exe) do
    if String.contains?(exe, "/"), do: exe, else: System.find_executable(exe) || exe
  end

  defp charlist_env(env) do
    Enum.map(env, fn
      {k, nil} -> {to_charlist(k), false}
      {k, v} -> {to_charlist(k), to_charlist(v)}
    end)
  end

  @doc "True while the OS process exists and is not a zombie."
  @spec alive?(pos_integer() | nil) :: boolean()
  def alive?(nil), do: false

  def alive?(os_pid) when is_integer(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} ->
        # "pid (comm) S ...": the state follows the last ')'
        rest = stat |> :binary.split(")", [:global]) |> List.last()
        not String.starts_with?(String.trim_leading(rest), ["Z", "X"])

      {:error, :enoent} ->
        false

      {:error, _} ->
        match?({_, 0}, System.cmd("kill", ["-0", "#{os_pid}"], stderr_to_stdout: true))
    end
  end

  @doc "Sends `signal` (\"TERM\", \"KILL\") to an OS pid; a vanished pid is fine."
  @spec signal(pos_integer(), String.t()) :: :ok
  def signal(os_pid, signal) when is_integer(os_pid) do
    System.cmd("kill", ["-#{signal}", "#{os_pid}"], stderr_to_stdout: true)
    :ok
  end

  @doc "Sends `signal` to several OS pids with one `kill`; vanished pids are fine."
  @spec signal_all([pos_integer()], String.t()) :: :ok
  def signal_all([], _signal), do: :ok

  def signal_all(os_pids, signal) do
    System.cmd("kill", ["-#{signal}" | Enum.map(os_pids, &Integer.to_string/1)],
      stderr_to_stdout: true
    )

    :ok
  end

  @doc """
  SIGKILLs a worker's process tree, leaving nothing behind.

  `worker` is the Python worker's OS pid, `port_pid` the OS pid the Port
  spawned. They are the same process unless the worker runs under a guard
  (a child subreaper that forks the worker, sweeps its descendants when it
  dies, then exits). The worker and every descendant found now are killed at
  once. A guard is not killed first (what the worker spawns in the meantime
  would escape it): it gets `guard_grace` ms to sweep and exit by itself, and
  is killed, with whatever is left under it, only if it has not.
  """
  @spec kill_tree(pos_integer() | nil, pos_integer() | nil, non_neg_integer()) :: :ok
  def kill_tree(worker, port_pid, guard_grace \\ 1_000)

  def kill_tree(worker, port_pid, _guard_grace) when port_pid in [nil, worker] do
    # Found before the kill: once the worker is dead its children are re-parented.
    tree = if worker, do: [worker | descendants(worker)], else: []
    signal_all(tree, "KILL")
  end

  def kill_tree(worker, guard, guard_grace) do
    signal_all(Enum.uniq([worker | descendants(guard)]) -- [guard], "KILL")
    identity = start_time(guard)
    # Not in the caller: it must not block, and must outlive it.
    spawn(fn -> last_look(guard, identity, guard_grace) end)
    :ok
  end

  # The guard had `grace` ms to sweep and exit by itself; if it is still there
  # (and still the same process, not a reused pid), it and what is left under it
  # are SIGKILLed.
  defp last_look(guard, identity, grace) do
    unless await_exit(guard, grace) or start_time(guard) != identity do
      signal_all(descendants(guard) ++ [guard], "KILL")
    end

    :ok
  end

  @doc """
  Ends a worker's process tree that has been asked to stop and has had its
  grace: closes `port` (Python sees end of input), sends SIGTERM, waits a
  second, then SIGKILLs the tree (see `kill_tree/3`). With `port` nil the
  process has already exited and only its guard is waited for.

  `{worker, port_pid}` are the OS pids as for `kill_tree/3`. A guard gets a
  second after all this to exit by itself before it and what is left under it
  are SIGKILLed.
  """
  @spec terminate(port() | nil, {pos_integer() | nil, pos_integer() | nil}) :: :ok
  def terminate(port, {worker, port_pid}) do
    guard = if port_pid not in [nil, worker], do: port_pid
    identity = guard && start_time(guard)

    if port do
      close(port)

      if alive?(worker) do
        signal(worker, "TERM")
        await_exit(worker, 1_000) || kill_tree(worker, port_pid)
      end
    end

    if guard, do: last_look(guard, identity, 1_000), else: :ok
  end

  @doc "Closes a port; one that is already closed is fine."
  @spec close(port()) :: :ok
  def close(port) do
    Port.close(port)
    :ok
  rescue
    ArgumentError -> :ok
  end

  @doc "Every descendant of `os_pid`, parents before children (from /proc; [] without it)."
  @spec descendants(pos_integer()) :: [pos_integer()]
  def descendants(os_pid) do
    case File.ls("/proc") do
      {:ok, entries} ->
        children =
          for entry <- entries,
              {pid, ""} <- [Integer.parse(entry)],
              [_state, ppid | _] <- [stat_fields(pid)],
              do: {String.to_integer(ppid), pid}

        children |> Enum.group_by(&elem(&1, 0), &elem(&1, 1)) |> walk([os_pid], [])

      {:error, _} ->
        []
    end
  end

  defp walk(_children, [], acc), do: Enum.reverse(acc)

  defp walk(children, [pid | rest], acc) do
    kids = Map.get(children, pid, [])
    walk(children, rest ++ kids, Enum.reverse(kids, acc))
  end

  # A process's start time (clock ticks since boot): tells a pid apart from a
  # later process that reuses the number.
  defp start_time(os_pid) do
    case stat_fields(os_pid) do
      fields when length(fields) > 19 -> Enum.at(fields, 19)
      _ -> nil
    end
  end

  # The fields of /proc/PID/stat after "pid (comm)" (comm may hold spaces and
  # parentheses: the fields follow the last ')'), from the state on.
  defp stat_fields(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} ->
        stat |> :binary.split(")", [:global]) |> List.last() |> String.split(" ", trim: true)

      {:error, _} ->
        []
    end
  end

  @doc "Waits up to `timeout` ms for the OS pid to be gone; true if it is."
  @spec await_exit(pos_integer() | nil, non_neg_integer()) :: boolean()
  def await_exit(os_pid, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_await_exit(os_pid, deadline)
  end

  defp do_await_exit(os_pid, deadline) do
    cond do
      not alive?(os_pid) ->
        true

      System.monotonic_time(:millisecond) >= deadline ->
        false

      true ->
        Process.sleep(10)
        do_await_exit(os_pid, deadline)
    end
  end

  @doc "A fresh log file for one worker's stdout and stderr."
  @spec new_log(String.t()) :: String.t()
  def new_log(worker_id) do
    dir = Path.join(System.tmp_dir!(), "snakepit")
    File.mkdir_p!(dir)
    safe = String.replace(worker_id, ~r/[^A-Za-z0-9_.-]/, "_")
    Path.join(dir, "#{safe}-#{System.unique_integer([:positive])}.log")
  end

  @doc "The last `bytes` of a log file, or \"\"."
  @spec tail(String.t() | nil, pos_integer()) :: String.t()
  def tail(path, bytes \\ 2000)
  def tail(nil, _bytes), do: ""

  def tail(path, bytes) do
    with {:ok, %File.Stat{size: size}} <- File.stat(path),
         {:ok, io} <- File.open(path, [:read, :binary]) do
      try do
        skip = max(size - bytes, 0)
        {:ok, _} = :file.position(io, skip)

        case IO.binread(io, bytes) do
          data when is_binary(data) -> data
          _ -> ""
        end
      after
        File.close(io)
      end
    else
      _ -> ""
    end
  end
end
