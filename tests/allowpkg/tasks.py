"""Functions allowed by prefix, not registered with ``@ray_proxy.task``."""

from tests.allowpkg import IMPORTED

IMPORTED.append(__name__)


def double(x: int) -> int:
    """2 * x."""
    return 2 * x


class Box:
    """An actor class allowed by prefix."""

    def get(self) -> int:
        """Always 1."""
        return 1


def _private(x: int) -> int:
    return x
