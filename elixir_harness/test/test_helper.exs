Logger.configure(level: :info)
Logger.configure_backend(:console, metadata: [:snakepit_worker, :call_id])
ExUnit.start(timeout: 120_000)
