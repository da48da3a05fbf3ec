defmodule Snakepit.Pool.Lifecycle do
  @moduledoc false
  # The pool's workers coming and going: a worker due for replacement
  # (`:max_calls`, `:max_age`, `:max_memory_mb`, a reload), retired (drained,
  # then stopped), workers started to replace or to grow, a reload begun, the
  # memory polls, and the periodic look at ages, idleness and queue time that
  # scales the pool. The decisions are `Snakepit.Pool.Members`' (pure); these
  # functions apply them to the pool's state map and start and stop workers
  # through `Snakepit.Pool.Tree`.

  alias Snakepit.{Options, Worker}
  alias Snakepit.Pool.{Events, Members, Tree}

  @doc "Marks worker `pid` due for replacement (`reason`) unless it already is, and acts on it."
  def make_due(pid, reason, state) do
    case state.workers do
      %{^pid => %{due: nil, retiring: nil} = w} ->
        reconcile(%{state | workers: %{state.workers | pid => %{w | due: reason}}})

      _ ->
        state
    end
  end

  # Retire and start workers as `Members.plan/3` says (after the census).
  @doc "Retires and starts workers as `Members.plan/3` says (once the census is in)."
  def reconcile(%{census: false} = state), do: state

  def reconcile(state) do
    {retire, start} = Members.plan(state.workers, state.pending, state.target)
    state = Enum.reduce(retire, state, fn {pid, reason}, state -> retire(pid, reason, state) end)

    Enum.reduce(List.duplicate(:start, start), state, fn :start, state ->
      Tree.start_worker(state.sup, state.opts, state.next_n)
      %{state | next_n: state.next_n + 1, pending: state.pending + 1}
    end)
  end

  @doc "Drains worker `pid` (no new calls) and stops it once it has none in flight."
  def retire(pid, reason, state) do
    w = state.workers[pid]
    Events.emit(state.name, state.cfg.events, {:retiring, w.worker_id, reason})
    status = if w.status == :ready, do: :draining, else: w.status
    recycled = if reason in Members.recycle_reasons(), do: 1, else: 0

    state = %{
      state
      | workers: %{state.workers | pid => %{w | retiring: reason, status: status}},
        recycled: state.recycled + recycled
    }

    maybe_stop(pid, state)
  end

  # A retiring worker with nothing in flight is stopped (its GenServer and
  # Python process); its :DOWN removes it.
  @doc "Stops retiring worker `pid` if nothing is in flight on it; its :DOWN removes it."
  def maybe_stop(pid, state) do
    case state.workers do
      %{^pid => %{retiring: r, stopping: false, inflight: inflight} = w}
      when r != nil and map_size(inflight) == 0 ->
        Tree.stop_worker(state.sup, pid)
        %{state | workers: %{state.workers | pid => %{w | stopping: true}}}

      _ ->
        state
    end
  end

  @doc """
  Begins a reload (`Snakepit.Pool.reload/2`) for caller `from`: a new
  generation; every worker there or asked for is due (`:reload`).
  """
  def reload(from, state) do
    gen = state.generation + 1

    workers =
      Map.new(state.workers, fn
        {pid, %{retiring: nil} = w} -> {pid, %{w | due: w.due || :reload}}
        other -> other
      end)

    old = Enum.count(workers, fn {_, w} -> w.gen < gen end)
    waiters = if state.reload, do: state.reload.waiters, else: []

    reload = %{
      gen: gen,
      total: old + state.pending,
      stale_pending: state.pending,
      waiters: [from | waiters]
    }

    state = %{state | generation: gen, workers: workers, reload: reload}
    state |> reconcile() |> reload_progress()
  end

  @doc "Answers `reload/2`'s callers once no worker of an older generation is left."
  def reload_progress(%{reload: %{waiters: [_ | _]} = r} = state) do
    left = Enum.count(state.workers, fn {_, w} -> w.gen < r.gen end) + r.stale_pending

    if left == 0 do
      Enum.each(r.waiters, &GenServer.reply(&1, :ok))
      Events.emit(state.name, state.cfg.events, {:reload, :done, r.total})
      %{state | reload: %{r | waiters: []}}
    else
      state
    end
  end

  def reload_progress(state), do: state

  # ---------------------------------------- ticks: age, idle, memory, scale

  @doc "Schedules the next look at ages, idleness and queue time (none when nothing needs it)."
  def schedule_tick(%{cfg: cfg}) do
    elastic? = cfg.max_size > cfg.min_size

    ms =
      cond do
        elastic? -> min(100, max(cfg.scale_up_wait, 10))
        cfg.max_age -> min(1_000, max(div(cfg.max_age, 10), 10))
        true -> nil
      end

    if ms, do: Process.send_after(self(), :"$snakepit_tick", ms)
  end

  @doc "Schedules the next memory poll (only with `:max_memory_mb`)."
  def schedule_memory(%{cfg: %{max_memory_mb: nil}}), do: nil

  def schedule_memory(state) do
    interval = state.opts[:health_interval] || Options.default(:health_interval)
    Process.send_after(self(), :"$snakepit_memory_tick", interval)
  end

  @doc "Asks every ready worker for its memory, off the pool's process (`:max_memory_mb`)."
  def poll_memory(state) do
    schedule_memory(state)
    pool = self()

    for {pid, %{status: :ready, retiring: nil}} <- state.workers do
      spawn(fn ->
        case Worker.health_check(pid, 5_000) do
          {:ok, %{memory_mb: mb}} when is_number(mb) -> send(pool, {:"$snakepit_memory", pid, mb})
          _ -> :ok
        end
      end)
    end

    state
  end

  @doc "Worker `pid` uses `mb` MB: over `:max_memory_mb`, it is due (`:max_memory`)."
  def memory(pid, mb, state) do
    case state.workers do
      %{^pid => w} ->
        due =
          if w.due == nil and w.retiring == nil and mb > state.cfg.max_memory_mb,
            do: :max_memory,
            else: w.due

        state = %{state | workers: %{state.workers | pid => %{w | memory_mb: mb, due: due}}}
        if due != w.due, do: reconcile(state), else: state

      _ ->
        state
    end
  end

  @doc "The periodic look: idle times, workers past `:max_age`, and scaling."
  def tick(state, now) do
    workers =
      Map.new(state.workers, fn {pid, w} ->
        idle? = w.status == :ready and map_size(w.inflight) == 0 and w.served == w.tick_served
        idle_since = if idle?, do: w.idle_since || now, else: nil
        due = if w.due == nil and w.expires != nil and now >= w.expires, do: :max_age, else: w.due
        {pid, %{w | idle_since: idle_since, tick_served: w.served, due: due}}
      end)

    state = %{state | workers: workers}
    if state.cfg.max_size > state.cfg.min_size, do: scale(state, now), else: state
  end

  defp scale(state, now) do
    head_wait =
      case :queue.peek(state.queue) do
        {:value, call} -> System.monotonic_time(:microsecond) - call.queued_at
        :empty -> 0
      end

    # workers busy at this look (all of them while calls wait), the most over the window
    busy = Enum.count(state.workers, fn {_, w} -> map_size(w.inflight) > 0 end)
    busy = if state.qlen > 0, do: state.target, else: busy
    sc = %{state.scaling | peak: max(state.scaling.peak, busy)}

    idle =
      for {pid, %{retiring: nil, status: :ready, idle_since: t}} <- state.workers, t != nil do
        {pid, now - t}
      end
      |> Enum.sort_by(fn {_, ms} -> -ms end)

    s = %{
      target: state.target,
      min: state.cfg.min_size,
      max: state.cfg.max_size,
      pending: state.pending,
      wait_ms: div(max(state.max_wait_us, head_wait), 1_000),
      scale_up_wait: state.cfg.scale_up_wait,
      scale_down_idle: state.cfg.scale_down_idle,
      last_up: sc.last_up,
      queued: state.qlen,
      peak_busy: sc.peak,
      window_ms: now - sc.since,
      idle: idle
    }

    state = %{state | max_wait_us: 0}
    # a new window once this one has been judged
    window = if s.window_ms >= s.scale_down_idle, do: %{since: now, peak: busy}, else: %{}

    case Members.scale(s, now) do
      {:up, why} ->
        state = %{state | scaling: %{sc | last_up: now, since: now, peak: busy}}
        scaled(state, state.target + 1, why, now)

      {:down, pid, why} ->
        state = %{state | scaling: %{sc | since: now, peak: busy}}
        state = scaled(state, state.target - 1, why, now)
        retire(pid, :scale_down, state)

      :hold ->
        %{state | scaling: Map.merge(sc, window)}
    end
  end

  defp scaled(state, to, why, now) do
    Events.emit(state.name, state.cfg.events, {:scaled, state.target, to, why})
    %{state | target: to, last_scaled: %{from: state.target, to: to, why: why, at: now}}
  end
end
