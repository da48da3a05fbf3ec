"""An ML worker that returns numpy results as they are (docs/types.md).

No ``.tolist()``, ``.item()`` or hand-made converters: an array reaches
Elixir as a ``%Snakepit.Tensor{}`` (one binary, Nx's layout), a numpy scalar
as a number, a dataclass as a map, a datetime as a ``DateTime``. Arguments
are coerced by their annotations: ``texts: list[str]``, ``since: datetime``,
``query: np.ndarray`` (a tensor or nested lists).

    cd elixir_harness && mix run ../examples/elixir/embeddings.exs
    snakepit-py call examples/embeddings_worker.py embed '["good movie", "bad plot"]'
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib

import numpy as np

import snakepit_py as snakepit

DIM = 8


def _vector(text: str) -> np.ndarray:
    """A pretend embedding: deterministic per word, L2-normalised."""
    vec = np.zeros(DIM, dtype=np.float32)
    for word in text.lower().split():
        rng = np.random.default_rng(zlib.crc32(word.encode()))
        vec += rng.standard_normal(DIM).astype(np.float32)
    norm = np.linalg.norm(vec)
    return vec / norm if norm else vec


@dataclasses.dataclass
class Match:
    index: int
    text: str
    score: float


class EmbeddingsWorker:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.index = np.zeros((0, DIM), dtype=np.float32)
        self.updated: dt.datetime | None = None

    @snakepit.method
    def embed(self, texts: list[str]) -> np.ndarray:
        """One float32 row per text: a {len(texts), 8} tensor."""
        return np.stack([_vector(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)

    @snakepit.method
    def add(self, texts: list[str]) -> dict:
        """Index texts; say how many and when."""
        self.texts += texts
        self.index = np.concatenate([self.index, self.embed(texts)])
        self.updated = dt.datetime.now(dt.timezone.utc)
        return {"count": np.int64(len(self.texts)), "updated": self.updated}

    @snakepit.method
    def search(self, query: np.ndarray, k: int = 2) -> list[Match]:
        """The k indexed texts nearest to a query vector (a tensor or a list of floats)."""
        scores = self.index @ query.astype(np.float32)
        best = np.argsort(-scores)[:k]
        return [Match(i, self.texts[i], scores[i]) for i in best]

    @snakepit.method
    def stats(self) -> dict:
        """numpy scalars and arrays in a plain map."""
        return {
            "mean": self.index.mean(axis=0),
            "norms": np.linalg.norm(self.index, axis=1),
            "max": self.index.max() if len(self.index) else np.float32("nan"),
            "updated": self.updated,
        }
