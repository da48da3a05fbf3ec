"""Serving a worker over gRPC (docs/protocol.md §8): process setup, security, exit.

``serve`` is what ``snakepit-py worker TARGET --grpc HOST:PORT`` runs. One
dispatcher serves every RPC (see ``_grpc_router``); this module builds the
server around it and owns the process: the ``SNAKEPIT_READY`` line, dying with
the parent, SIGTERM draining, and refusing an unprotected public bind.
Imported only in gRPC mode.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc

from .. import _lifecycle, _logging
from .._context import prepare_interrupts
from .._dispatcher import Dispatcher
from .._options import WorkerOptions
from .._registry import Registry
from ..codec import get_codec
from ._grpc_health import NOT_SERVING, HealthService
from ._grpc_router import TERMS, Router
from ._grpc_service import SyncThreads, WorkerService, import_messages

__all__ = ["serve", "parse_address", "is_loopback", "resolve", "server_options"]


def parse_address(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT``; an empty host means 127.0.0.1).

    Raises:
        ValueError: no port, or a port that is not a number in 0..65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--grpc expects HOST:PORT (port 0 picks a free one), got: {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "127.0.0.1", int(port)


def resolve(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``host`` stands for: itself if it is an IP literal, else what DNS says.

    Raises:
        OSError: the name does not resolve (``socket.gaierror``).
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    # A scoped IPv6 address comes back as "fe80::1%eth0"; the scope is no part of the address.
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]  # type: ignore[union-attr]  # (an address: a str)


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback one.

    Decided on the addresses, not the spelling: ``127.x.example`` can point
    anywhere. A name that does not resolve is not loopback.
    """
    try:
        addresses = resolve(host)
    except (OSError, UnicodeError):
        return False
    return bool(addresses) and all(_loopback_address(a) for a in addresses)


def _loopback_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or address).is_loopback


def server_options(max_frame: int) -> list[tuple[str, Any]]:
    """Channel options of the server: size limits from ``--max-frame``, keepalive."""
    limit = max_frame + (2 << 20)  # one frame plus a batch of small ones
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Ping an idle client every 20 s; no answer within 10 s: the peer is
        # gone, its RPCs are cancelled (and so are their calls).
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        # Two workers must never share a port silently.
        ("grpc.so_reuseport", 0),
    ]


class _TokenAuth(grpc.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every RPC (UNAUTHENTICATED otherwise)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        given = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                break
        handler = continuation(details)
        if handler is None or hmac.compare_digest(given, self._expected):
            return handler
        return _deny(handler, "missing authorization" if not given else "invalid token")


def _deny(handler: Any, why: str) -> Any:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED at once."""

    def abort(_request: Any, context: grpc.ServicerContext) -> Any:
        hint = "send 'authorization: Bearer <token>'"
        context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{why}: {hint}")

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class _StreamLimit(grpc.ServerInterceptor):
    """At most ``limit`` streaming RPCs open at once; one more is refused at once.

    A streaming RPC (Session, Stream, health Watch) holds a server thread for as
    long as it is open, so without a bound idle streams would take every thread
    and unary RPCs (``Call``, health ``Check``) would wait behind them. The
    server's pool has ``limit`` threads more than the unary RPCs need; a slot is
    given back only when the RPC's thread is done with it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        # Reentrant: a dropped stream's __del__ may give its slot back at any moment.
        self._lock = threading.RLock()
        self._refusal = (
            f"too many streams: this worker serves at most {limit} streaming RPCs (Session, "
            "Stream, Watch) at once (--grpc-max-streams); close one or retry later"
        )

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        kind = _kind(handler)
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        return make(self._guard(getattr(handler, kind)), handler.request_deserializer,
                    handler.response_serializer)  # fmt: skip

    def _take(self) -> bool:
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.open -= 1

    def _guard(self, behavior: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            if not self._take():
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._refusal)
            try:
                result = behavior(request, context)
            except BaseException:
                self.give()
                raise
            if not hasattr(result, "__next__"):  # stream-unary: answered, the thread is free
                self.give()
                return result
            return _Held(result, self)

        return guarded


def _kind(handler: Any) -> str:
    if handler.request_streaming:
        return "stream_stream" if handler.response_streaming else "stream_unary"
    return "unary_stream"


class _Held:
    """A response iterator that gives its stream slot back when it ends or is dropped."""

    __slots__ = ("_responses", "_limit")

    def __init__(self, responses: Any, limit: _StreamLimit) -> None:
        self._responses = responses
        self._limit: _StreamLimit | None = limit

    def __iter__(self) -> _Held:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._responses)
        except BaseException:  # the end, an abort, an error: the thread leaves the stream
            self.release()
            raise

    def release(self) -> None:
        limit, self._limit = self._limit, None
        if limit is not None:
            limit.give()

    def __del__(self) -> None:  # the server dropped the iterator (the client went away)
        self.release()


def _refuse(message: str) -> NoReturn:
    print(f"snakepit-py: {message}", file=sys.stderr, flush=True)
    os._exit(2)


def _require_loopback(host: str) -> None:
    """Exit (code 2) unless ``host`` resolves to loopback addresses only."""
    try:
        addresses = resolve(host)
    except (OSError, UnicodeError) as exc:
        _refuse(f"cannot resolve the --grpc host {host!r} ({exc}), so cannot tell whether "
                "other machines could reach it; bind 127.0.0.1 or [::1]")  # fmt: skip
    if addresses and all(_loopback_address(a) for a in addresses):
        return
    shown = ", ".join(sorted({str(a) for a in addresses}))
    where = host if shown == host else f"{host} ({shown})"
    _refuse(
        f"refusing to serve gRPC on {where}, which other machines can reach, with no "
        "authentication: anyone who can connect could run this worker's methods. Pass "
        "--grpc-token TOKEN (or SNAKEPIT_GRPC_TOKEN) and/or --tls-cert/--tls-key, or bind "
        "127.0.0.1 and tunnel."
    )


def _credentials(opts: WorkerOptions) -> grpc.ServerCredentials | None:
    if not (opts.tls_cert or opts.tls_key):
        return None
    if not (opts.tls_cert and opts.tls_key):
        _refuse("TLS needs both --tls-cert and --tls-key")
    try:
        with open(opts.tls_key, "rb") as f:
            key = f.read()
        with open(opts.tls_cert, "rb") as f:
            cert = f.read()
    except OSError as exc:
        _refuse(f"cannot read the TLS files: {exc}")
    return grpc.ssl_server_credentials([(key, cert)])


class _Server:
    """The running worker: the gRPC server, the dispatcher and how the process ends."""

    def __init__(self, registry: Registry, opts: WorkerOptions) -> None:
        self.opts = opts
        self.done = threading.Event()
        self.router = Router()
        self.dispatcher = Dispatcher(
            registry, TERMS, self.router.write,
            threads=opts.threads, max_inflight=opts.max_inflight, worker_id=opts.worker_id,
            on_exit=self.done.set, default_grace_ms=opts.grace_ms,
        )  # fmt: skip
        self.health = HealthService()
        self.pool = SyncThreads(self.dispatcher)
        codec = get_codec(opts.codec)
        service = WorkerService(self.dispatcher, self.router, self.pool, codec, opts.max_frame,
                                self.drain)  # fmt: skip
        self.streams = _StreamLimit(opts.grpc_max_streams)
        # After the token check: a refused client never takes a stream slot.
        interceptors: list[grpc.ServerInterceptor] = (
            [_TokenAuth(opts.grpc_token)] if opts.grpc_token else []
        )
        interceptors.append(self.streams)
        # One thread per RPC in flight: the streams (bounded above), unary calls
        # (bounded by max_inflight), and a margin for health checks, Describe and
        # refusals. Streams can never take the threads unary RPCs need.
        workers = opts.grpc_max_streams + opts.max_inflight + 2 * opts.threads + 16
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snakepit-grpc"),
            handlers=[service.handler(), self.health.handler()],
            interceptors=interceptors, options=server_options(opts.max_frame),
        )  # fmt: skip

    def bind(self, host: str, port: int, creds: grpc.ServerCredentials | None) -> int:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if creds is None:
                return self.server.add_insecure_port(address)
            return self.server.add_secure_port(address, creds)
        except RuntimeError as exc:
            _refuse(f"cannot listen on {address}: {exc}")

    def drain(self, grace_ms: float | None = None) -> None:
        """Refuse new calls (health NOT_SERVING), let in-flight ones finish, then exit."""
        self.health.set(NOT_SERVING)
        self.dispatcher.shutdown(grace_ms)

    def abort(self) -> None:
        """The parent is gone: cancel everything and exit now."""
        self.health.set(NOT_SERVING)
        self.dispatcher.abort()

    def watch_parent(self) -> None:
        """Exit when stdin (a pipe) reaches end of input, or when --parent-pid is gone."""
        try:
            st = os.fstat(0)
            stdin_pipe = stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)
        except OSError:
            stdin_pipe = False
        if stdin_pipe:
            threading.Thread(target=self._watch_stdin, name="snakepit-stdin", daemon=True).start()
        if self.opts.parent_pid:
            threading.Thread(target=self._watch_pid, args=(self.opts.parent_pid,),
                             name="snakepit-parent", daemon=True).start()  # fmt: skip

    def _watch_stdin(self) -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        self.abort()

    def _watch_pid(self, pid: int) -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass  # exists, owned by someone else
            if os.getppid() == 1 and pid != 1:
                break  # re-parented to init: our parent died (and the pid may be reused)
            time.sleep(0.1)
        self.abort()


def serve(load: Callable[[], Registry], opts: WorkerOptions) -> NoReturn:
    """Run a worker over gRPC until the parent dies, SIGTERM or ``:shutdown``; never returns.

    Args:
        load: imports the user's code and returns its registry.
        opts: the worker options (``opts.grpc`` is ``HOST:PORT``).
    """
    from .. import _state

    _state.set_worker_args(opts.worker_args)
    try:
        host, port = parse_address(opts.grpc or "")
    except ValueError as exc:
        _refuse(str(exc))
    creds = _credentials(opts)
    if not opts.grpc_token and creds is None:
        _require_loopback(host)
    # Ignored with a do-nothing handler, not SIG_IGN, which children would inherit.
    signal.signal(signal.SIGINT, _lifecycle.ignore_signal)
    _lifecycle.become_subreaper()
    prepare_interrupts()  # (never an import under a call's lock: see _context)
    registry = load()
    worker = _Server(registry, opts)
    _logging.install(worker.dispatcher.send, opts.log_level)
    bound = worker.bind(host, port, creds)
    worker.server.start()
    signal.signal(signal.SIGTERM, lambda *_: worker.drain())
    shown = f"[{host}]" if ":" in host else host
    print(f"SNAKEPIT_READY grpc {shown}:{bound}", flush=True)
    _lifecycle.keep_heap_memory()
    threading.Thread(target=import_messages, name="snakepit-import", daemon=True).start()
    worker.watch_parent()
    while not worker.done.wait(3600):
        pass
    _exit(worker)


def _exit(worker: _Server) -> NoReturn:
    _logging.uninstall()
    aborted = worker.dispatcher.aborted
    for session in list(worker.router.sessions):
        session.close()  # after :bye, each Session stream ends
    # Answers already routed still have to leave: give the RPCs a moment.
    worker.server.stop(0.05 if aborted else 1.0).wait(1.5)
    _lifecycle.exit_process(aborted)
