"""A worker that breaks the runtime's refusal path: a dead reader must end the worker."""

import snakepit_py as snakepit
from snakepit_py import _dispatcher


def _broken_bad_request(self, call_id, message):
    raise RuntimeError("bad_request is broken on purpose")


_dispatcher.Dispatcher.bad_request = _broken_bad_request


@snakepit.method
def add(a: int, b: int) -> int:
    return a + b
