"""A module whose name is a prefix of ``tasks``' (module boundaries are whole names)."""

from tests.allowpkg import IMPORTED

IMPORTED.append(__name__)
