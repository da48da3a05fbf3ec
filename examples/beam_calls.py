"""Python calling back into the BEAM mid-call (protocol 1.1): data in, results out.

The supervisor serves named Elixir functions (``beam_functions:`` on
``Snakepit.Pool`` or ``Snakepit.Worker``); this worker calls them with
``snakepit.beam.call`` / ``await snakepit.beam.acall``. The Elixir half is
``examples/elixir/beam_calls.exs`` (part of ``make demo``)::

    cd elixir_harness && mix run ../examples/elixir/beam_calls.exs

From pytest, with no BEAM, serve Python callables in their place::

    FakeSupervisor("examples/beam_calls.py", beam_functions={"next_batch": ..., ...})
"""

from __future__ import annotations

import asyncio
import statistics

import snakepit_py as snakepit


@snakepit.method
def score_batches(job: str):
    """Streams a scoring job: asks the BEAM for each batch, writes each summary back.

    ``next_batch(job, n)`` returns a list of numbers or nil when the job has no
    more; ``store_result(job, n, summary)`` persists a summary (an Ecto insert,
    say). Each summary is also streamed to the caller as a chunk.
    """
    threshold = snakepit.beam.call("get_config", "threshold", timeout=5.0)
    n = 0
    while (rows := snakepit.beam.call("next_batch", job, n, timeout=5.0)) is not None:
        summary = {
            "batch": n,
            "mean": round(statistics.fmean(rows), 3),
            "above": sum(1 for r in rows if r > threshold),
        }
        snakepit.beam.call("store_result", job, n, summary, timeout=5.0)
        yield summary
        n += 1
    return {"job": job, "batches": n}


@snakepit.method
async def enrich(user_ids: list) -> list:
    """Async: fetches many users from the BEAM at once."""
    users = await asyncio.gather(*(snakepit.beam.acall("fetch_user", u) for u in user_ids))
    return [{"id": u["id"], "name": u["name"].title()} for u in users]


@snakepit.method
def lookup(user_id: int) -> dict:
    """An error in the BEAM function arrives as BeamCallError (kind, type, message)."""
    try:
        return {"user": snakepit.beam.call("fetch_user", user_id)}
    except snakepit.BeamCallError as exc:
        return {"error": exc.kind, "type": exc.type, "message": exc.message}
