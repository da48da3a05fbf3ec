"""A module with import-time code and nothing to run."""

from tests.allowpkg import IMPORTED

IMPORTED.append(__name__)
