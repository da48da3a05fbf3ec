"""The ``snakepit-py`` command: ``worker``, ``call``, ``describe``, ``doctor`` and ``health``."""

from __future__ import annotations

import sys

from ._options import add_worker_arguments, fast_parse, options_from_args, split_worker_args

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    import argparse
    from typing import Any


__all__ = ["main", "run_main_module"]


def _load_or_die(target: str):
    from ._registry import load_target

    def load():
        try:
            return load_target(target)
        except BaseException:
            import traceback

            traceback.print_exc()
            print(f"snakepit-py: could not load worker {target!r}", file=sys.stderr)
            sys.stderr.flush()
            import os

            os._exit(1)

    return load


def _serve(load, opts) -> None:
    from ._guard import start as start_guard

    start_guard()  # before anything else: no threads, no user code yet (see _guard.py)
    import faulthandler  # (built in: costs nothing at start-up)

    # A crash in C code leaves every thread's Python stack on stderr (the
    # supervisor's log), not just a dead process.
    faulthandler.enable()
    if opts.metrics_addr:  # in the worker, before :ready (which names the bound address)
        from ._prometheus import start as start_metrics

        start_metrics(opts.metrics_addr)
    if opts.grpc:
        from .transport.grpc import serve as serve_grpc

        serve_grpc(load, opts)
    else:
        from ._server import serve

        serve(load, opts)


def run_main_module(argv: list[str] | None) -> None:
    """Serve the ``__main__`` module's methods with options from ``argv`` (default sys.argv)."""
    from ._registry import registry_from_module

    runtime_argv, worker_argv = split_worker_args(list(sys.argv[1:] if argv is None else argv))
    opts = fast_parse(runtime_argv, worker_argv)
    if opts is None:
        import argparse

        parser = argparse.ArgumentParser(
            prog=sys.argv[0], description="serve this script's methods"
        )
        add_worker_arguments(parser)
        opts = options_from_args(parser.parse_args(runtime_argv), worker_argv)
    _serve(lambda: registry_from_module(sys.modules["__main__"]), opts)


# --- call / describe --------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses as JSON, else the text itself."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _show(value: Any) -> str:
    import json

    try:
        return json.dumps(value, ensure_ascii=False, default=_fallback)
    except (TypeError, ValueError):
        return repr(value)


def _fallback(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, tuple):
        return list(v)
    raise TypeError


def _print_error(err: Any) -> None:
    print(f"error ({err.kind}): {err.type}: {err.message}", file=sys.stderr)
    if err.details:
        for key, value in err.details.items():
            print(f"  {key}: {_show(value)}", file=sys.stderr)
    if err.traceback:
        print(err.traceback.rstrip(), file=sys.stderr)


def _cmd_call(ns: argparse.Namespace, worker_argv: list[str]) -> int:
    from .testing import FakeSupervisor

    args = [_parse_value(a) for a in ns.args]
    kwargs = {}
    for item in ns.kw or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"snakepit-py: --kw expects KEY=VALUE, got: {item!r}", file=sys.stderr)
            return 2
        kwargs[key] = _parse_value(value)
    timeout_ms = int(ns.timeout * 1000) if ns.timeout else None
    # Ctrl-C must cancel the call, not kill us with a traceback: the worker
    # ignores SIGINT, so we turn it into an exception we handle below.
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    show_logs = ns.logs or ns.log_level is not None
    log_options: dict[str, Any] = {}
    if show_logs:  # the worker's `logging` records, on stderr as they arrive
        level = (ns.log_level or "INFO").upper()
        log_options = {"extra_args": ["--log-level", level], "on_log": _print_log}
    with FakeSupervisor(
        ns.target, worker_args=worker_argv, threads=ns.threads, **log_options
    ) as sup:
        code = _call_and_print(ns, sup, args, kwargs, timeout_ms)
    if show_logs and sup.output().strip():  # what it wrote to stdout and stderr, once it exited
        print(sup.output().rstrip(), file=sys.stderr)
    return code


def _print_log(level: str, message: str, meta: dict[Any, Any]) -> None:
    logger = meta.get("logger") or "?"
    print(f"[worker {level.upper()} {logger}] {message}", file=sys.stderr, flush=True)


def _call_and_print(ns: argparse.Namespace, sup: Any, args: list[Any], kwargs: dict[str, Any],
                    timeout_ms: int | None) -> int:  # fmt: skip
    from .errors import CallError

    describe = {m["name"]: m for m in sup.describe()["methods"]}
    streaming = describe.get(ns.method, {}).get("streaming", False)
    try:
        if streaming:
            stream = sup.stream(ns.method, *args, kwargs=kwargs, timeout_ms=timeout_ms)
            try:
                for chunk in stream:
                    print(_show(chunk), flush=True)
            except KeyboardInterrupt:
                stream.cancel()
                try:
                    for _ in stream:
                        pass
                except CallError:
                    pass
                print("cancelled", file=sys.stderr)
                return 130
            result = stream.result
        else:
            call = sup.start_call(ns.method, *args, kwargs=kwargs, timeout_ms=timeout_ms)
            try:
                result = call.wait()
            except KeyboardInterrupt:
                sup.cancel(call.id)
                try:
                    call.wait()
                except CallError:
                    pass
                print("cancelled", file=sys.stderr)
                return 130
    except CallError as err:
        _print_error(err)
        return 1
    print(_show(result) if ns.json or streaming else _pretty(result))
    return 0


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        import json

        try:
            return json.dumps(value, indent=2, ensure_ascii=False, default=_fallback)
        except (TypeError, ValueError):
            return repr(value)
    return _show(value)


def _cmd_describe(ns: argparse.Namespace, worker_argv: list[str]) -> int:
    from .testing import FakeSupervisor

    with FakeSupervisor(ns.target, worker_args=worker_argv) as sup:
        catalogue = sup.describe()
    if ns.json:
        import json

        print(json.dumps(catalogue, indent=2, default=_fallback))
        return 0
    for m in catalogue["methods"]:
        params = []
        for p in m["params"]:
            text = p["name"]
            if p["kind"] == "var_positional":
                text = "*" + text
            elif p["kind"] == "var_keyword":
                text = "**" + text
            if p["annotation"]:
                text += f": {p['annotation']}"
            if not p["required"] and p["kind"] not in ("var_positional", "var_keyword"):
                text += f" = {_show(p['default'])}"
            params.append(text)
        flags = [f for f, on in (("async", m["async"]), ("streaming", m["streaming"])) if on]
        if m["timeout_ms"]:
            flags.append(f"timeout {m['timeout_ms']} ms")
        suffix = f"  [{', '.join(flags)}]" if flags else ""
        print(f"{m['name']}({', '.join(params)}){suffix}")
        if m["doc"]:
            for line in m["doc"].splitlines():
                print(f"    {line}")
    return 0


def _cmd_health(ns: argparse.Namespace) -> int:
    """Ask a gRPC worker's grpc.health.v1 service; exit 0 when it answers as the probe wants."""
    import os

    import grpc

    from .client import GrpcClient

    token = os.environ.get("SNAKEPIT_GRPC_TOKEN") or None
    ca = None
    if ns.tls_ca:
        with open(ns.tls_ca, "rb") as f:
            ca = f.read()
    try:
        with GrpcClient(ns.address, token=token, root_certificates=ca) as client:
            status = client.serving_status(ns.service, timeout=ns.timeout)
    except grpc.RpcError as err:
        print(f"unreachable: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    print(status)
    # --alive: a draining worker (NOT_SERVING) is alive; only no answer fails
    return 0 if status == "SERVING" or (ns.alive and status == "NOT_SERVING") else 1


def _version_action() -> type:
    import argparse

    class VersionAction(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            from ._accel import summary
            from ._version import __version__

            print(f"snakepit-py {__version__}\n{summary()}")
            parser.exit()

    return VersionAction


def _parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(
        prog="snakepit-py",
        description="Python workers for BEAM supervisors. Options after a bare -- go to the "
        "worker's own code (snakepit_py.worker_args()).",
    )
    p.add_argument(
        "--version",
        action=_version_action(),
        nargs=0,
        help="print the version and whether the C accelerators are in use, then exit",
    )
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="serve TARGET over the Port (what the supervisor launches)")
    w.add_argument("target", help="path/worker.py, package.module or package.module:Class")
    add_worker_arguments(w)
    c = sub.add_parser("call", help="start TARGET, make one call, print the result")
    c.add_argument("target")
    c.add_argument("method")
    c.add_argument("args", nargs="*", help="positional arguments (JSON, or plain text)")
    c.add_argument("--kw", action="append", metavar="KEY=VALUE", help="a keyword argument")
    c.add_argument("--timeout", type=float, help="seconds before the call times out")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--json", action="store_true", help="print the result as one JSON line")
    c.add_argument(
        "--logs", action="store_true",
        help="show the worker's logs (INFO and up) and output on stderr",
    )  # fmt: skip
    c.add_argument("--log-level", metavar="LEVEL", help="with --logs: the lowest level shown")
    d = sub.add_parser("describe", help="print TARGET's method catalogue")
    d.add_argument("target")
    d.add_argument("--json", action="store_true")
    sub.add_parser(
        "doctor",
        help="which Python and snakepit_py this is, which C accelerators are in use and why not",
    )
    h = sub.add_parser(
        "health",
        help="probe a gRPC worker (grpc.health.v1): exit 0 if SERVING; the token is read "
        "from SNAKEPIT_GRPC_TOKEN",
    )
    h.add_argument("address", help="HOST:PORT of the worker")
    h.add_argument("--service", default="", help="the service to ask about (default: the server)")
    h.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    h.add_argument("--tls-ca", metavar="FILE", help="PEM certificates to trust: use TLS")
    h.add_argument(
        "--alive", action="store_true", help="NOT_SERVING (draining) passes too: a liveness probe"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``snakepit-py`` and ``python -m snakepit_py``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    runtime_argv, worker_argv = split_worker_args(argv)
    if len(runtime_argv) >= 2 and runtime_argv[0] == "worker" and runtime_argv[1][:1] != "-":
        opts = fast_parse(runtime_argv[2:], worker_argv)  # the supervisor's hot path
        if opts is not None:
            _serve(_load_or_die(runtime_argv[1]), opts)
            return 0
    ns = _parser().parse_args(runtime_argv)
    if ns.command in ("call", "describe"):
        from .errors import ProtocolError

        try:
            return (
                _cmd_call(ns, worker_argv)
                if ns.command == "call"
                else _cmd_describe(ns, worker_argv)
            )
        except ProtocolError as err:  # the worker did not start: its output says why
            print(f"snakepit-py: {err}", file=sys.stderr)
            return 1
    if ns.command == "worker":
        _serve(_load_or_die(ns.target), options_from_args(ns, worker_argv))
        return 0
    if ns.command == "health":
        return _cmd_health(ns)
    if ns.command == "doctor":
        from ._accel import report

        print(report())
        return 0
    return 2  # (argparse allows no other command)
