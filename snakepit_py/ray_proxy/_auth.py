"""Ray token authentication, decided explicitly at launch (``--auth``).

- ``token`` for ``local`` (the default there): a fresh random token for this
  proxy's private Ray, passed to Ray and its children through ``RAY_AUTH_MODE``
  and ``RAY_AUTH_TOKEN`` in this process's environment. Nothing is written to
  ``~/.ray/auth_token`` (which Ray would otherwise create for a new cluster).
- ``token`` for a remote cluster: the token is read from ``--auth-token-file``.
- ``env``: use ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH`` exactly as
  the supervisor set them (the default for remote clusters).
- ``disabled``: ``RAY_AUTH_MODE=disabled``.

The token is never logged nor reported.
"""

from __future__ import annotations

import os
import secrets

from .errors import ProxyConfigError

__all__ = ["configure_auth"]

_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def configure_auth(mode: str, local: bool, token_file: str | None,
                   environ: dict[str, str] | None = None) -> str:  # fmt: skip
    """Set the Ray auth variables in ``environ`` (default ``os.environ``) before ``ray.init``.

    Returns:
        the effective mode as reported in health: ``token``, ``disabled`` or ``env:<mode>``.

    Raises:
        ProxyConfigError: the token file is missing or empty.
    """
    env = os.environ if environ is None else environ
    if mode == "env":
        return f"env:{env.get('RAY_AUTH_MODE', 'unset')}"
    for var in _VARS:
        env.pop(var, None)
    if mode == "disabled":
        env["RAY_AUTH_MODE"] = "disabled"
        return "disabled"
    env["RAY_AUTH_MODE"] = "token"
    if local and token_file is None:
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        return "token"
    try:
        with open(token_file or "", encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise ProxyConfigError(f"--auth-token-file {token_file!r}: {exc}") from None
    if not token:
        raise ProxyConfigError(f"--auth-token-file {token_file!r} is empty")
    env["RAY_AUTH_TOKEN"] = token
    return "token"
