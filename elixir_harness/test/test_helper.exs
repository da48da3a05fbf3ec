# Tests tagged :needs_cancel rely on the Python worker interrupting a running
# sync call; run them with `mix test --include needs_cancel`.
Logger.configure(level: :info)
Logger.configure_backend(:console, metadata: [:snakepit_worker, :call_id])
ExUnit.start(exclude: [:needs_cancel], timeout: 120_000)
