"""The proxy's own launch options: whatever follows ``--`` on the worker command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from .errors import ProxyConfigError

__all__ = ["ProxyOptions", "parse_options"]

USAGE = (
    "snakepit-py worker snakepit_py.ray_proxy -- "
    "--ray-address local|auto|ray://HOST:PORT|HOST:PORT "
    "[--num-cpus N] [--object-store-mb MB] [--tasks MODULE_OR_FILE]... [--allow PREFIX]... "
    "[--auth token|disabled|env] [--jobs-address URL --allow-entrypoint PREFIX...] "
    "[--connect-on-first-call]"
)


@dataclass
class ProxyOptions:
    """Parsed proxy options (see ``docs/ray.md`` for each one)."""

    ray_address: str
    num_cpus: int = 2
    num_gpus: int = 0
    object_store_mb: int = 128
    temp_dir: str | None = None
    namespace: str = "snakepit"
    tasks: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    auth: str = "default"
    auth_token_file: str | None = None
    jobs_address: str | None = None
    allow_entrypoint: list[str] = field(default_factory=list)
    connect_at_start: bool = True

    @property
    def local(self) -> bool:
        """True when the proxy starts (and owns) a private Ray."""
        return self.ray_address == "local"

    @property
    def auth_mode(self) -> str:
        """``token``, ``disabled`` or ``env`` once the default is resolved."""
        if self.auth != "default":
            return self.auth
        return "token" if self.local else "env"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ProxyConfigError(f"ray proxy options: {message}; usage: {USAGE}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="snakepit_py.ray_proxy", add_help=False)
    p.add_argument("--ray-address", required=True)
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--num-gpus", type=int, default=0)
    p.add_argument("--object-store-mb", type=int, default=128)
    p.add_argument("--temp-dir")
    p.add_argument("--namespace", default="snakepit")
    p.add_argument("--tasks", action="append", default=[])
    p.add_argument("--allow", action="append", default=[])
    p.add_argument("--auth", choices=("default", "token", "disabled", "env"), default="default")
    p.add_argument("--auth-token-file")
    p.add_argument("--jobs-address")
    p.add_argument("--allow-entrypoint", action="append", default=[])
    # Connecting takes seconds (~10 for a private Ray), so by default it happens
    # before :ready, where the start timeout covers it, not in a call's timeout.
    p.add_argument("--connect-on-first-call", dest="connect_at_start", action="store_false")
    p.add_argument("--connect-at-start", action="store_true", help=argparse.SUPPRESS)  # the default
    return p


def parse_options(argv: list[str]) -> ProxyOptions:
    """Parse the proxy's options.

    Raises:
        ProxyConfigError: a missing ``--ray-address``, an unknown option or a bad value.
    """
    ns = _parser().parse_args(argv)
    opts = ProxyOptions(**vars(ns))
    address = opts.ray_address
    if not (
        address in ("local", "auto")
        or address.startswith("ray://")
        or (":" in address and "://" not in address)
    ):
        raise ProxyConfigError(
            "--ray-address must be local, auto, ray://HOST:PORT or a GCS HOST:PORT; "
            f"got: {address!r}"
        )
    if opts.num_cpus < 1 or opts.num_gpus < 0 or opts.object_store_mb < 80:
        raise ProxyConfigError(
            "--num-cpus must be >= 1, --num-gpus >= 0 and --object-store-mb >= 80 "
            f"(Ray's minimum); got: {opts.num_cpus}, {opts.num_gpus}, {opts.object_store_mb}"
        )
    if opts.auth == "token" and not opts.local and not opts.auth_token_file:
        raise ProxyConfigError(
            "--auth token for a remote cluster needs --auth-token-file PATH "
            "(or use --auth env with RAY_AUTH_MODE/RAY_AUTH_TOKEN in the environment)"
        )
    if opts.allow_entrypoint and not opts.jobs_address:
        raise ProxyConfigError("--allow-entrypoint needs --jobs-address URL")
    return opts
