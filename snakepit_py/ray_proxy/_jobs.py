"""Ray Jobs (``ray[default]``'s job submission API over the dashboard's HTTP port).

A job's entrypoint is a shell command, so it is the one way to run code that
no ``@task`` registered: it is off unless the proxy was launched with
``--jobs-address`` and each entrypoint must start with an ``--allow-entrypoint``
prefix (``*`` allows any, on purpose and visibly).
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import AsyncIterator
from typing import Any

from .errors import EntrypointNotAllowed, JobsDisabled, UnknownJob

__all__ = ["JobsClient"]


class JobsClient:
    """A lazily created ``JobSubmissionClient`` plus the entrypoint allow-list."""

    def __init__(self, address: str | None, allow: list[str]) -> None:
        self.address = address
        self.allow = [shlex.split(p) for p in allow if p != "*"]
        self.allow_any = "*" in allow
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

    def check(self, entrypoint: Any) -> None:
        """Refuse an entrypoint outside the allow-list.

        Raises:
            EntrypointNotAllowed: it does not start with an allowed prefix.
        """
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            raise EntrypointNotAllowed(f"an entrypoint is a non-empty command; got: {entrypoint!r}")
        if self.allow_any:
            return
        words = shlex.split(entrypoint)
        if not any(words[: len(p)] == p for p in self.allow):
            allowed = ", ".join(shlex.join(p) for p in self.allow) or "(none)"
            raise EntrypointNotAllowed(
                f"entrypoint {entrypoint!r} does not start with an --allow-entrypoint "
                f"prefix; allowed: {allowed}"
            )

    def submit(self, entrypoint: str, **kwargs: Any) -> str:
        """Submit a job; returns its submission id."""
        self.check(entrypoint)
        client = self.client()
        return client.submit_job(entrypoint=entrypoint, **kwargs)

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
