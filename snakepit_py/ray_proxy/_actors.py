"""The actors this proxy created, by id."""

from __future__ import annotations

import inspect
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ._registry import Spec, public_methods
from .errors import UnknownActor

__all__ = ["ActorRecord", "ActorTable"]


@dataclass
class ActorRecord:
    """One live actor: its id, class registration and Ray handle."""

    id: str
    spec: Spec
    handle: Any
    created: float = field(default_factory=time.time)

    def method(self, name: Any) -> tuple[Any, bool]:
        """The Ray method handle for ``name`` and whether it is a generator.

        Raises:
            UnknownActor: ``name`` is not a public method of the actor's class.
        """
        methods = public_methods(self.spec.target)
        if not isinstance(name, str) or name not in methods:
            raise UnknownActor(
                f"actor {self.id} ({self.spec.name}) has no public method {name!r}; "
                f"methods: {', '.join(methods) or '(none)'}"
            )
        fn = inspect.getattr_static(self.spec.target, name)
        fn = getattr(fn, "__func__", fn)
        return getattr(self.handle, name), inspect.isgeneratorfunction(fn)


class ActorTable:
    """Actor ids (``actor-<n>-<random>``) to live actors."""

    def __init__(self) -> None:
        self.actors: dict[str, ActorRecord] = {}
        self._ids = itertools.count(1)

    def add(self, spec: Spec, handle: Any) -> ActorRecord:
        """Record a new actor and return its record."""
        rec = ActorRecord(f"actor-{next(self._ids)}-{secrets.token_hex(4)}", spec, handle)
        self.actors[rec.id] = rec
        return rec

    def get(self, actor_id: Any) -> ActorRecord:
        """The live actor ``actor_id``.

        Raises:
            UnknownActor: no live actor has that id.
        """
        rec = self.actors.get(actor_id) if isinstance(actor_id, str) else None
        if rec is None:
            raise UnknownActor(
                f"no live actor {actor_id!r}; live: {', '.join(self.actors) or '(none)'}"
            )
        return rec

    def pop(self, actor_id: Any) -> ActorRecord:
        """Forget actor ``actor_id`` and return its record (UnknownActor if none)."""
        rec = self.get(actor_id)
        del self.actors[rec.id]
        return rec

    def summary(self) -> list[dict[str, Any]]:
        """Plain data about every live actor, for health reports."""
        return [{"actor_id": r.id, "class": r.spec.name, "created_ms": int(r.created * 1000)}
                for r in self.actors.values()]  # fmt: skip
