defmodule Snakepit.Call do
  @moduledoc false
  # One request's life on the caller side: validate it, send it to a pool or a
  # worker, wait for the one terminal reply, send `:cancel` when the caller's
  # timeout runs out first.
  #
  # The reply address is a monitor alias (`monitor(..., alias: :demonitor)`,
  # as `GenServer.call/3` does): once the caller stops waiting the alias is
  # dead, so a late reply is dropped by the runtime instead of landing in the
  # caller's mailbox.
  #
  # Messages (the `call` map is built here and read by Pool and Worker):
  #   to a pool or worker:  {:"$snakepit_call", call}
  #                         {:"$snakepit_cancel", ref}
  #   to a worker:          {:"$snakepit_credit", ref, n}
  #   to the caller (ref):  {ref, {:ok, result}} | {ref, {:error, %Snakepit.Error{}}}
  #                         {ref, {:chunk, worker_pid, seq, data}}   (streams only)

  alias Snakepit.Error

  @type t :: %{
          ref: reference() | nil,
          caller: pid(),
          method: String.t(),
          args: list(),
          kwargs: map(),
          meta: map(),
          deadline: integer() | nil,
          timeout: timeout(),
          stream: boolean(),
          credit: non_neg_integer() | nil,
          affinity: term(),
          pool: pid() | nil,
          queued_at: integer() | nil
        }

  @call_opts [:timeout, :affinity, :meta, :traceparent]

  @doc "Validates `request` and `opts` into a call map (raises ArgumentError)."
  @spec build!(term(), keyword(), keyword()) :: t()
  def build!(request, opts, extra \\ [])

  # Every call goes through here, so the common case (atom keys, no options)
  # costs a few pattern matches, not a walk over keyword lists.
  def build!(request, opts, extra) when is_map(request) and is_list(opts) do
    check_opts!(opts, extra)
    method = method!(request)
    args = get(request, :args, "args") || []
    kwargs = get(request, :kwargs, "kwargs") || %{}
    meta = option(opts, :meta) || get(request, :meta, "meta") || %{}

    unless is_list(args),
      do: raise(ArgumentError, "request :args must be a list, got: #{inspect(args)}")

    unless is_map(kwargs),
      do: raise(ArgumentError, "request :kwargs must be a map, got: #{inspect(kwargs)}")

    unless is_map(meta), do: raise(ArgumentError, ":meta must be a map, got: #{inspect(meta)}")

    meta =
      case option(opts, :traceparent) do
        nil ->
          meta

        tp when is_binary(tp) ->
          Map.put(meta, "traceparent", tp)

        tp ->
          raise ArgumentError,
                ":traceparent must be a W3C traceparent string, got: #{inspect(tp)}"
      end

    timeout =
      case opts do
        [] -> Keyword.fetch!(extra, :default_timeout)
        _ -> Keyword.get(opts, :timeout, Keyword.fetch!(extra, :default_timeout))
      end

    unless timeout == :infinity or (is_integer(timeout) and timeout >= 0) do
      raise ArgumentError,
            ":timeout must be a non-negative integer or :infinity, got: #{inspect(timeout)}"
    end

    %{
      ref: nil,
      caller: self(),
      method: method,
      args: args,
      kwargs: kwargs,
      meta: meta,
      deadline: if(timeout == :infinity, do: nil, else: now_ms() + timeout),
      timeout: timeout,
      stream: false,
      credit: nil,
      affinity: option(opts, :affinity),
      pool: nil,
      queued_at: nil
    }
  end

  def build!(request, opts, extra) do
    check_opts!(opts, extra)

    raise ArgumentError,
          "expected a request map like %{method: \"name\", args: [...]}, got: #{inspect(request)}"
  end

  defp check_opts!([], _extra), do: :ok

  defp check_opts!(opts, extra) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError, "expected opts to be a keyword list, got: #{inspect(opts)}"
    end

    allowed = @call_opts ++ Keyword.get(extra, :allowed, [])

    case Enum.reject(Keyword.keys(opts), &(&1 in allowed)) do
      [] -> :ok
      bad -> raise ArgumentError, "unknown options #{inspect(bad)}, valid: #{inspect(allowed)}"
    end
  end

  defp method!(request) do
    case get(request, :method, "method") do
      m when is_binary(m) and m != "" -> m
      m when is_atom(m) and m not in [nil, true, false] -> Atom.to_string(m)
      _ -> raise ArgumentError, "request needs a :method (a string), got: #{inspect(request)}"
    end
  end

  defp option([], _key), do: nil
  defp option(opts, key), do: Keyword.get(opts, key)

  # An atom key, else its string form (looked up only when the atom is absent).
  defp get(map, key, string_key) do
    case map do
      %{^key => value} -> value
      %{^string_key => value} -> value
      _ -> nil
    end
  end

  @doc "Sends a built call to `target` (pool name or pid, worker pid) and waits for the reply."
  @spec run(atom() | pid(), t()) :: {:ok, term()} | {:error, Error.t()}
  def run(target, call) do
    case start(target, call) do
      {:ok, pid, ref} -> await(pid, ref, call.timeout)
      {:error, _} = error -> error
    end
  end

  @doc "Sends the call; returns the resolved pid and the reply alias."
  @spec start(atom() | pid(), t()) :: {:ok, pid(), reference()} | {:error, Error.t()}
  def start(target, call) do
    case whereis(target) do
      nil ->
        {:error, Error.new(:noproc, "#{inspect(target)} is not running")}

      pid ->
        ref = :erlang.monitor(:process, pid, [{:alias, :demonitor}])
        send(pid, {:"$snakepit_call", %{call | ref: ref}})
        {:ok, pid, ref}
    end
  end

  defp await(pid, ref, timeout) do
    receive do
      {^ref, reply} ->
        Process.demonitor(ref, [:flush])
        reply

      {:DOWN, ^ref, _, _, reason} ->
        {:error, down_error(pid, reason)}
    after
      timeout ->
        Process.demonitor(ref, [:flush])

        receive do
          {^ref, reply} -> reply
        after
          0 ->
            send(pid, {:"$snakepit_cancel", ref})
            {:error, Error.new(:timeout, "no reply within #{timeout} ms; the call was cancelled")}
        end
    end
  end

  @doc false
  def down_error(pid, :noproc), do: Error.new(:noproc, "#{inspect(pid)} is not running")

  # a distributed pool's member on another node, whose node went away
  def down_error(pid, :noconnection),
    do:
      Error.new(:node_down, "lost the connection to #{node(pid)} (#{inspect(pid)})",
        details: %{node: node(pid)}
      )

  def down_error(pid, reason)
      when reason in [:normal, :shutdown] or
             (is_tuple(reason) and elem(reason, 0) == :shutdown),
      do: Error.new(:shutting_down, "#{inspect(pid)} stopped: #{inspect(reason)}")

  def down_error(pid, reason),
    do: Error.new(:worker_crashed, "#{inspect(pid)} exited: #{inspect(reason)}")

  @doc false
  def whereis(pid) when is_pid(pid), do: pid
  def whereis(name) when is_atom(name), do: Process.whereis(name)

  def whereis(other),
    do: raise(ArgumentError, "expected a pool name (atom) or a pid, got: #{inspect(other)}")

  @doc false
  def reply(%{ref: ref}, reply), do: send(ref, {ref, reply})

  @doc false
  def now_ms, do: :erlang.monotonic_time(:millisecond)
end
