"""A package the Ray proxy tests allow with ``--allow tests.allowpkg``.

Each module records its import in ``IMPORTED`` (kept in ``builtins`` so the
record survives the modules themselves): a test can tell whether a frame
caused an import.
"""

import builtins

IMPORTED: list[str] = builtins.__dict__.setdefault("_snakepit_allowpkg_imported", [])
IMPORTED.append(__name__)
