"""Reading Ray streaming generators (``ObjectRefGenerator``) with bounded waits."""

from __future__ import annotations

from typing import Any

__all__ = ["next_events"]


def next_events(ray: Any, gens: dict[int, Any], timeout: float) -> list[tuple[int, str, Any]]:
    """Wait up to ``timeout`` s for any generator in ``gens`` to have its next item.

    Returns:
        events ``(key, "item", value)``, ``(key, "end", None)`` or ``(key, "error", exc)``,
        at most one per generator; ``"end"`` and ``"error"`` are final for that generator.
    """
    if not gens:
        return []
    keys = {id(g): k for k, g in gens.items()}
    ready, rest = ray.wait(list(gens.values()), num_returns=1, timeout=timeout)
    if rest:
        more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
        ready += more
    events: list[tuple[int, str, Any]] = []
    for gen in ready:
        key = keys[id(gen)]
        try:
            ref = next(gen)
        except StopIteration:
            events.append((key, "end", None))
            continue
        except Exception as exc:  # the task failed before yielding anything readable
            events.append((key, "error", exc))
            continue
        try:
            events.append((key, "item", ray.get(ref)))
        except Exception as exc:
            events.append((key, "error", exc))
    return events
