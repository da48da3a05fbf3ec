"""Ray Jobs (``ray[default]``'s job submission API over the dashboard's HTTP port).

A job's entrypoint is a shell command (Ray runs it with ``/bin/sh -c``), so it
is the one way to run code that no ``@task`` registered: it is off unless the
proxy was launched with ``--jobs-address``, and an entrypoint's words must
start with the words of an ``--allow-entrypoint`` prefix (``*`` allows any, on
purpose and visibly). The BEAM gives the entrypoint as a list of words (each is
quoted for the shell) or as a string of plain words; a string holding shell
syntax is refused, whatever the allow-list says.
"""

from __future__ import annotations

import shlex
import threading
import unicodedata
from collections.abc import AsyncIterator
from typing import Any

from .errors import EntrypointNotAllowed, JobsDisabled, ProxyConfigError, UnknownJob

__all__ = ["JobsClient", "entrypoint_words", "SHELL_SYNTAX"]

# Refused anywhere in a string entrypoint, quoted or not, with what /bin/sh makes
# of each; control characters (newline, CR, tab, NUL, ...) are refused as well.
# Quotes are allowed: with no `$`, backquote or backslash inside, the shell reads a
# quoted word as shlex does, and the words are quoted afresh before Ray sees them.
SHELL_SYNTAX = {
    "$": "expansion or command substitution",
    "`": "command substitution",
    ";": "command separator",
    "&": "background job or && list",
    "|": "pipe or || list",
    "<": "redirection",
    ">": "redirection",
    "(": "subshell",
    ")": "subshell",
    "\\": "escape or line continuation",
    "*": "glob",
    "?": "glob",
    "[": "glob",
    "]": "glob",
    "{": "brace expansion or group",
    "}": "brace expansion or group",
    "~": "tilde expansion",
    "#": "comment",
    "!": "pipeline negation or history expansion",
}


def _refuse(message: str, entrypoint: Any, char: str | None = None) -> EntrypointNotAllowed:
    return EntrypointNotAllowed(f"{message}; got: {entrypoint!r}", entrypoint=entrypoint, char=char)


def entrypoint_words(entrypoint: Any) -> list[str]:
    """The words of an entrypoint given as a list of strings, or as a string of plain
    words (split with ``shlex`` once it is known to hold no shell syntax).

    Raises:
        EntrypointNotAllowed: neither form, a string with shell syntax or a control
            character (the message names it), a word holding NUL, no program word,
            or a program word the shell would take for a variable assignment.
    """
    if isinstance(entrypoint, (list, tuple)):
        words = list(entrypoint)
        for i, word in enumerate(words):
            if not isinstance(word, str):
                raise _refuse(f"entrypoint word {i} is not a string: {word!r}", entrypoint)
            if "\0" in word:
                raise _refuse(f"entrypoint word {i} contains '\\x00'", entrypoint, "\0")
    elif isinstance(entrypoint, str):
        for i, char in enumerate(entrypoint):
            role = SHELL_SYNTAX.get(char)
            if role is None and unicodedata.category(char) == "Cc":
                role = "control character"
            if role is not None:
                raise _refuse(
                    f"entrypoint contains {char!r} ({role}) at offset {i}: a string "
                    "entrypoint may hold only plain words; give a list of words instead "
                    "(each is quoted for the shell)",
                    entrypoint,
                    char,
                )
        try:
            words = shlex.split(entrypoint)
        except ValueError as exc:  # an unclosed quote
            raise _refuse(f"entrypoint cannot be split into words ({exc})", entrypoint) from None
    else:
        raise _refuse("an entrypoint is a list of strings or a string", entrypoint)
    if not words or not words[0]:
        raise _refuse("an entrypoint needs a program as its first word", entrypoint)
    if "=" in words[0]:
        raise _refuse(
            f"the program word {words[0]!r} contains '=' (the shell would take it for a "
            "variable assignment)",
            entrypoint,
            "=",
        )
    return words


class JobsClient:
    """A lazily created ``JobSubmissionClient`` plus the entrypoint allow-list."""

    def __init__(self, address: str | None, allow: list[str]) -> None:
        self.address = address
        self.allow_any = "*" in allow
        self.allow: list[list[str]] = []
        for prefix in allow:
            if prefix == "*":
                continue
            try:
                words = shlex.split(prefix)
            except ValueError as exc:
                raise ProxyConfigError(f"--allow-entrypoint {prefix!r}: {exc}") from None
            if not words:  # an empty prefix would allow every entrypoint
                raise ProxyConfigError(
                    f"--allow-entrypoint needs a command or '*'; got: {prefix!r}"
                )
            self.allow.append(words)
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The JobSubmissionClient (blocking: it checks the server when made)."""
        if not self.address:
            raise JobsDisabled(
                "the Ray Jobs API is off: launch the proxy with --jobs-address "
                "http://HOST:8265 and --allow-entrypoint PREFIX"
            )
        with self._lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                self._client = JobSubmissionClient(self.address)
            return self._client

    def check(self, entrypoint: Any) -> str:
        """The shell command Ray gets for ``entrypoint``: its words, each quoted.

        Raises:
            EntrypointNotAllowed: see :func:`entrypoint_words`; or its words do not
                start with the words of an allowed prefix.
        """
        words = entrypoint_words(entrypoint)
        if not self.allow_any and not any(words[: len(p)] == p for p in self.allow):
            allowed = ", ".join(shlex.join(p) for p in self.allow) or "(none)"
            raise _refuse(
                f"entrypoint {shlex.join(words)!r} does not start with an "
                f"--allow-entrypoint prefix (allowed: {allowed})",
                entrypoint,
            )
        return shlex.join(words)

    def submit(self, entrypoint: Any, **kwargs: Any) -> str:
        """Submit a job (``entrypoint`` as :meth:`check` takes it); returns its id."""
        command = self.check(entrypoint)
        return self.client().submit_job(entrypoint=command, **kwargs)

    def status(self, job_id: str) -> dict[str, Any]:
        """``job_id``, ``status`` (Ray's, lower-case), ``message``, times, ``entrypoint``."""
        try:
            info = self.client().get_job_info(job_id)
        except RuntimeError as exc:
            raise UnknownJob(f"no Ray job {job_id!r}: {exc}") from None
        return {
            "job_id": job_id,
            "status": str(info.status.value).lower(),
            "message": info.message,
            "entrypoint": info.entrypoint,
            "start_time_ms": info.start_time,
            "end_time_ms": info.end_time,
        }

    def stop(self, job_id: str) -> bool:
        """Ask Ray to stop the job; True if it was running."""
        return bool(self.client().stop_job(job_id))

    def logs(self, job_id: str) -> str:
        """The job's whole log so far."""
        return self.client().get_job_logs(job_id)

    def tail(self, job_id: str) -> AsyncIterator[str]:
        """The job's log as it is written, until the job ends (async iterator)."""
        return self.client().tail_job_logs(job_id)
