"""A worker exercising every kind of method the runtime supports (used by the tests)."""

import asyncio
import logging
import os
import sys
import time

import snakepit_py as snakepit

log = logging.getLogger("tests.basic")


class Worker:
    def __init__(self):
        self.models = {}
        self.closed = []

    @snakepit.method
    def add(self, a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @snakepit.method
    def echo(self, value):
        return value

    @snakepit.method
    def scale(self, x: float, factor: float = 2.0) -> float:
        return x * factor

    @snakepit.method
    def concat(self, *parts: str, sep: str = "") -> str:
        return sep.join(parts)

    @snakepit.method
    def raw(self, data: bytes) -> dict:
        return {"type": type(data).__name__, "len": len(data)}

    @snakepit.method
    def text(self, s: str) -> str:
        return s.upper()

    @snakepit.method
    def fail(self, message: str = "boom"):
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise ValueError(message) from exc

    @snakepit.method
    def fail_with_details(self):
        exc = LookupError("no such model")
        exc.details = {"known": ["a", "b"]}
        raise exc

    @snakepit.method
    def child_sigint_disposition(self) -> str:
        import subprocess

        code = "import signal; print(signal.getsignal(signal.SIGINT))"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout

    @snakepit.method
    def exit_please(self):
        raise SystemExit(3)

    @snakepit.method
    def unencodable(self):
        return {"obj": object()}

    @snakepit.method
    def blob(self, size: int) -> bytes:
        """``size`` bytes (for replies over the frame limit)."""
        return b"x" * size

    @snakepit.method
    def blob_chunks(self, size: int):
        """A small chunk, then one of ``size`` bytes (for chunks over the frame limit)."""
        yield b"small"
        yield b"x" * size

    @snakepit.method
    def sleep(self, seconds: float = 0.2) -> str:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.005)
        return "slept"

    @snakepit.method
    def block(self, seconds: float = 1.0) -> str:
        time.sleep(seconds)
        return "blocked"

    @snakepit.method
    def busy(self, seconds: float = 30.0) -> int:
        """A pure-Python loop that never checks for cancellation."""
        n = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            n += 1
        return n

    @snakepit.method
    def cooperative(self, seconds: float = 30.0) -> str:
        call = snakepit.current_call()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if call.cancelled:
                return "noticed"
            time.sleep(0.001)
        return "finished"

    @snakepit.method
    def context_handed_on(self) -> list:
        """current_call() where the call's context is handed on: to_thread, copy_context."""
        import contextvars
        import threading

        async def main() -> int:
            return await asyncio.to_thread(lambda: snakepit.current_call().id)

        seen = [asyncio.run(main())]
        copied = contextvars.copy_context()
        thread = threading.Thread(target=lambda: seen.append(copied.run(snakepit.current_call).id))
        thread.start()
        thread.join()
        return seen

    @snakepit.method
    def context(self) -> dict:
        call = snakepit.current_call()
        return {
            "id": call.id,
            "method": call.method,
            "meta": call.meta,
            "has_deadline": call.deadline is not None,
        }

    @snakepit.method
    def log_things(self) -> str:
        log.debug("debug line")
        log.info("info line")
        log.warning("warning line %d", 42)
        log.error("error line")
        return "logged"

    @snakepit.method
    def noisy(self) -> str:
        print("hello from print", flush=True)
        sys.stdout.write("raw stdout write\n")
        sys.stdout.flush()
        os.write(1, b"\x00\x00\x00\x05junk from os.write(1)\n")
        os.write(2, b"to stderr\n")
        return "quiet result"

    @snakepit.method
    def load_model(self, name: str) -> list:
        self.models[name] = True
        snakepit.report_loaded(sorted(self.models))
        return sorted(self.models)

    @snakepit.method
    def publish(self, name: str, data) -> str:
        snakepit.publish(name, data)
        return "published"

    @snakepit.method
    def pid(self) -> int:
        return os.getpid()

    @snakepit.method
    def spawn_stubborn_child(self) -> int:
        """Start a child that ignores SIGTERM; returns its pid."""
        import subprocess

        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        proc = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(0.2)  # let it install the handler
        return proc.pid

    @snakepit.method
    def spawn_grandchild(self) -> int:
        """Start a grandchild whose parent exits at once (an orphan); returns its pid."""
        import subprocess

        code = (
            "import subprocess, sys; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "print(p.pid)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        return int(out.stdout)

    @snakepit.method(timeout=0.2)
    def limited(self) -> str:
        time.sleep(5)
        return "too late"

    @snakepit.method(timeout=0.2)
    def limited_busy(self) -> str:
        self.busy(5)
        return "too late"

    # --- async ---
    @snakepit.method
    async def async_add(self, a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    @snakepit.method
    async def async_sleep(self, seconds: float = 0.2) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.closed.append("async_sleep")
            raise
        return "async slept"

    @snakepit.method
    async def async_fail(self):
        raise RuntimeError("async boom")

    # --- streaming ---
    @snakepit.method
    def count(self, n: int, result="done"):
        yield from range(n)
        return result

    @snakepit.method
    def count_forever(self):
        i = 0
        try:
            while True:
                yield i
                i += 1
        finally:
            self.closed.append("count_forever")

    @snakepit.method
    def small_chunks(self, n: int):
        chunk = b"x" * 16
        for _ in range(n):
            yield chunk

    @snakepit.method
    def bad_chunk(self):
        try:
            yield 1
            yield object()
            yield 3
        finally:
            self.closed.append("bad_chunk")

    @snakepit.method
    def gen_fail(self):
        yield 1
        raise ValueError("stream broke")

    @snakepit.method
    async def async_count(self, n: int):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @snakepit.method
    async def async_forever(self):
        i = 0
        try:
            while True:
                await asyncio.sleep(0.001)
                yield i
                i += 1
        finally:
            self.closed.append("async_forever")

    @snakepit.method(streaming=True)
    def pushed(self, n: int) -> str:
        call = snakepit.current_call()
        for i in range(n):
            call.send({"step": i})
        return "pushed"

    @snakepit.method(streaming=True)
    def pushed_from_a_thread(self, seconds: float = 30.0) -> str:
        """A callback thread sends chunks while the call itself spins without checking."""
        call = snakepit.current_call()
        stop = []

        def callback():
            i = 0
            while not stop:
                try:
                    call.send(i)
                except BaseException:
                    return
                i += 1
                time.sleep(0.001)

        import threading

        t = threading.Thread(target=callback)
        t.start()
        try:
            self.busy(seconds)
        finally:
            stop.append(True)
            t.join()
        return "finished"

    @snakepit.method
    def closed_log(self) -> list:
        return list(self.closed)

    def health_check(self) -> dict:
        return {"loaded_models": sorted(self.models), "gpu": "none"}

    def _private(self):
        return "never callable"
