"""A private module: never imported by the allow list, never resolved."""

from tests.allowpkg import IMPORTED

IMPORTED.append(__name__)


def reach() -> int:
    """Unreachable by name."""
    return 0
