"""Worker options (PROTOCOL.md §1), shared by ``snakepit-py worker`` and ``snakepit.run()``."""

from __future__ import annotations

import argparse
import os

__all__ = ["WorkerOptions", "add_worker_arguments", "options_from_args", "split_worker_args"]


class WorkerOptions:
    """Everything a worker needs to know at launch (see PROTOCOL.md §1)."""

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
        self.tls_cert: str | None = None
        self.tls_key: str | None = None
        self.parent_pid: int | None = None
        self.log_level = "WARNING"
        self.grace_ms = 5000
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
        raise argparse.ArgumentTypeError(f"must be at least 1, got: {text}")
    return value


def _fds(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IN,OUT (e.g. 3,4), got: {text!r}") from None
    return a, b


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    """Add the worker options to a parser."""
    env = os.environ.get
    p.add_argument(
        "--fd",
        type=_fds,
        default=_fds(env("SNAKEPIT_FD", "3,4")),
        metavar="IN,OUT",
        help="protocol file descriptors (default 3,4)",
    )
    p.add_argument(
        "--stdio",
        action="store_true",
        help="speak the protocol on fds 0/1 (user output is moved to stderr)",
    )
    p.add_argument("--codec", choices=("etf", "msgpack"), default=env("SNAKEPIT_CODEC", "etf"))
    p.add_argument(
        "--threads", type=_positive, default=1, help="sync calls that may run at once (default 1)"
    )
    p.add_argument(
        "--max-inflight",
        type=_positive,
        default=64,
        help="calls accepted at once; more get :overloaded (default 64)",
    )
    p.add_argument(
        "--max-frame",
        type=_positive,
        default=64 * 2**20,
        help="largest frame accepted, in bytes (default 64 MiB)",
    )
    p.add_argument(
        "--worker-id",
        default=env("SNAKEPIT_WORKER_ID"),
        help="name used in logs and health (default: the OS pid)",
    )
    p.add_argument("--grpc", metavar="HOST:PORT", help="serve over gRPC instead of the Port")
    p.add_argument(
        "--grpc-token",
        default=env("SNAKEPIT_GRPC_TOKEN"),
        help="require 'authorization: Bearer TOKEN' on every gRPC call",
    )
    p.add_argument("--tls-cert", help="gRPC TLS certificate chain (PEM)")
    p.add_argument("--tls-key", help="gRPC TLS private key (PEM)")
    p.add_argument("--parent-pid", type=int, help="exit when this process is gone (gRPC mode)")
    p.add_argument(
        "--log-level",
        default=env("SNAKEPIT_LOG_LEVEL", "WARNING"),
        help="lowest logging level forwarded as :log frames (default WARNING)",
    )
    p.add_argument("--grace-ms", type=int, default=5000,
                   help="how long SIGTERM lets in-flight calls finish (default 5000)")  # fmt: skip


def split_worker_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` at the first ``--``: (runtime options, options for the worker's own code)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def options_from_args(ns: argparse.Namespace, worker_args: list[str]) -> WorkerOptions:
    """Build WorkerOptions from parsed arguments."""
    return WorkerOptions(
        fd_in=ns.fd[0],
        fd_out=ns.fd[1],
        stdio=ns.stdio,
        codec=ns.codec,
        threads=ns.threads,
        max_inflight=ns.max_inflight,
        max_frame=ns.max_frame,
        worker_id=ns.worker_id,
        grpc=ns.grpc,
        grpc_token=ns.grpc_token,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
        parent_pid=ns.parent_pid,
        log_level=ns.log_level,
        grace_ms=ns.grace_ms,
        worker_args=worker_args,
    )
