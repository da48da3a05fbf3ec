Logger.configure(level: :info)
Logger.configure_backend(:console, metadata: [:snakepit_worker, :call_id])

# Tests tagged :needs_guard check what the Python side's guard process does
# (a worker killed with SIGKILL leaves no child behind); they run when the
# workers announce one (not with SNAKEPIT_GUARD=0, nor off Linux).
guard? =
  case Snakepit.Worker.start_link(target: Snakepit.TestHelpers.test_worker()) do
    {:ok, w} ->
      guard = Snakepit.Worker.info(w).guard_pid
      Snakepit.Worker.stop(w)
      guard != nil

    {:error, _} ->
      false
  end

ExUnit.start(timeout: 120_000, exclude: if(guard?, do: [], else: [:needs_guard]))
