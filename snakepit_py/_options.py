"""Worker options (docs/protocol.md §1), shared by ``snakepit-py worker`` and ``snakepit.run()``.

One table describes every option. ``add_worker_arguments`` builds the argparse
options from it (for ``--help`` and error messages); ``fast_parse`` reads a
well-formed command line straight from it, because argparse and what it
imports cost a worker several milliseconds of start-up.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

__all__ = [
    "WorkerOptions",
    "add_worker_arguments",
    "fast_parse",
    "options_from_args",
    "split_worker_args",
]


class WorkerOptions:
    """Everything a worker needs to know at launch (see docs/protocol.md §1)."""

    def __init__(self, **options: object) -> None:
        self.fd_in = 3
        self.fd_out = 4
        self.stdio = False
        self.codec = "etf"
        self.threads = 1
        self.max_inflight = 64
        self.max_frame = 64 * 2**20
        self.worker_id: str | None = None
        self.grpc: str | None = None
        self.grpc_token: str | None = None
        self.grpc_max_streams = 64
        self.tls_cert: str | None = None
        self.tls_key: str | None = None
        self.parent_pid: int | None = None
        self.log_level = "WARNING"
        self.grace_ms = 5000
        self.metrics_addr: str | None = None
        self.worker_args: list[str] = []
        for key, value in options.items():
            if not hasattr(self, key):
                raise TypeError(f"unknown worker option {key!r}")
            setattr(self, key, value)

    def __repr__(self) -> str:
        return f"WorkerOptions({vars(self)!r})"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got: {text}")
    return value


def _fds(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"expected IN,OUT (e.g. 3,4), got: {text!r}") from None
    return a, b


def _codec(text: str) -> str:
    if text not in ("etf", "msgpack"):
        raise ValueError(f"choose etf or msgpack, got: {text!r}")
    return text


# flag: (dest, converter or None for a switch, env var, default, metavar, help)
_TABLE: dict[str, tuple[str, Callable[[str], object] | None, str | None, object, str | None, str]]
_TABLE = {
    "--fd": ("fd", _fds, "SNAKEPIT_FD", "3,4", "IN,OUT", "protocol file descriptors (default 3,4)"),
    "--stdio": ("stdio", None, None, False, None,
                "speak the protocol on fds 0/1 (user output is moved to stderr)"),
    "--codec": ("codec", _codec, "SNAKEPIT_CODEC", "etf", "etf|msgpack",
                "payload encoding of every frame (default etf)"),
    "--threads": ("threads", _positive, None, 1, "N",
                  "sync calls that may run at once (default 1)"),
    "--max-inflight": ("max_inflight", _positive, None, 64, "N",
                       "calls accepted at once; more get :overloaded (default 64)"),
    "--max-frame": ("max_frame", _positive, None, 64 * 2**20, "BYTES",
                    "largest frame accepted, in bytes (default 64 MiB)"),
    "--worker-id": ("worker_id", str, "SNAKEPIT_WORKER_ID", None, "ID",
                    "name used in logs and health (default: the OS pid)"),
    "--grpc": ("grpc", str, None, None, "HOST:PORT", "serve over gRPC instead of the Port"),
    "--grpc-token": ("grpc_token", str, "SNAKEPIT_GRPC_TOKEN", None, "TOKEN",
                     "require 'authorization: Bearer TOKEN' on every gRPC call"),
    "--grpc-max-streams": ("grpc_max_streams", _positive, None, 64, "N",
                           "gRPC streams (Session, Stream, Watch) open at once; more get "
                           "RESOURCE_EXHAUSTED (default 64)"),
    "--tls-cert": ("tls_cert", str, None, None, "PEM", "gRPC TLS certificate chain (PEM)"),
    "--tls-key": ("tls_key", str, None, None, "PEM", "gRPC TLS private key (PEM)"),
    "--parent-pid": ("parent_pid", int, None, None, "PID",
                     "exit when this process is gone (gRPC mode)"),
    "--log-level": ("log_level", str, "SNAKEPIT_LOG_LEVEL", "WARNING", "LEVEL",
                    "lowest logging level forwarded as :log frames (default WARNING)"),
    "--grace-ms": ("grace_ms", int, None, 5000, "MS",
                   "how long SIGTERM lets in-flight calls finish (default 5000)"),
    "--metrics-addr": ("metrics_addr", str, "SNAKEPIT_METRICS_ADDR", None, "HOST:PORT",
                       "serve Prometheus metrics on HOST:PORT (a bare PORT: loopback; "
                       "needs the metrics extra)"),
}  # fmt: skip


def _defaults() -> dict[str, object]:
    values: dict[str, object] = {}
    for dest, conv, env, default, _, _ in _TABLE.values():
        raw = os.environ.get(env) if env else None
        values[dest] = conv(raw) if raw is not None and conv is not None else default
    if isinstance(values["fd"], str):
        values["fd"] = _fds(values["fd"])
    return values


def _build(values: dict[str, object], worker_args: list[str]) -> WorkerOptions:
    fd = values.pop("fd")
    return WorkerOptions(fd_in=fd[0], fd_out=fd[1], worker_args=worker_args, **values)  # type: ignore[index]


def fast_parse(argv: list[str], worker_args: list[str]) -> WorkerOptions | None:
    """Parse well-formed worker options from ``argv`` (after TARGET) without argparse.

    Returns None for anything unusual (``--help``, an unknown option, a bad
    value, ``--opt=value``): argparse then parses it and reports errors its way.
    """
    try:
        values = _defaults()
    except ValueError:
        return None
    i = 0
    while i < len(argv):
        entry = _TABLE.get(argv[i])
        if entry is None:
            return None
        dest, conv = entry[0], entry[1]
        if conv is None:
            values[dest] = True
            i += 1
            continue
        if i + 1 >= len(argv):
            return None
        try:
            values[dest] = conv(argv[i + 1])
        except ValueError:
            return None
        i += 2
    return _build(values, worker_args)


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    """Add the worker options to an argparse parser."""
    import argparse

    def checked(conv: Callable[[str], object]) -> Callable[[str], object]:
        def parse(text: str) -> object:
            try:
                return conv(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        parse.__name__ = getattr(conv, "__name__", "value").lstrip("_")
        return parse

    defaults = _defaults()
    for flag, (dest, conv, env, _, metavar, text) in _TABLE.items():
        text = f"{text} [env {env}]" if env else text
        if conv is None:
            p.add_argument(flag, dest=dest, action="store_true", help=text)
        else:
            p.add_argument(flag, dest=dest, type=checked(conv), default=defaults[dest],
                           metavar=metavar, help=text)  # fmt: skip


def split_worker_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` at the first ``--``: (runtime options, options for the worker's own code)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def options_from_args(ns: argparse.Namespace, worker_args: list[str]) -> WorkerOptions:
    """Build WorkerOptions from parsed argparse arguments."""
    return _build({dest: getattr(ns, dest) for dest, *_ in _TABLE.values()}, worker_args)
