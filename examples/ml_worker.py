"""The demo's worker: "loads models" into its own dict, predicts, trains.

State lives here, in the Python process: each worker of the pool has its own
``self.models``. The Elixir side only routes calls (by affinity, to a worker
that has the model loaded) and supervises.

Try it by hand:

    snakepit-py call examples/ml_worker.py load_model sentiment
    snakepit-py call examples/ml_worker.py train '[[1, 2], [3, 4]]' --kw epochs=3
"""

import math
import os
import time

import snakepit_py as snakepit

# A pretend model: a word list scored by sentiment.
_LEXICON = {"good": 1.0, "great": 1.5, "love": 2.0, "bad": -1.0, "awful": -2.0, "hate": -2.0}


class MLWorker:
    def __init__(self):
        self.models = {}

    def _me(self):
        return {"pid": os.getpid()}

    @snakepit.method
    def load_model(self, name: str) -> dict:
        """Load a model into this worker's memory (pretend: it takes a moment)."""
        if name not in self.models:
            time.sleep(0.2)
            self.models[name] = {"name": name, "weights": dict(_LEXICON), "loaded_at": time.time()}
            snakepit.report_loaded(sorted(self.models))
        return {"model": name, "loaded": sorted(self.models), **self._me()}

    @snakepit.method
    def predict(self, name: str, text: str) -> dict:
        """Score `text` with a loaded model."""
        model = self.models.get(name)
        if model is None:
            raise LookupError(f"model {name!r} is not loaded on this worker")
        words = text.lower().split()
        score = sum(model["weights"].get(w.strip(".,!?"), 0.0) for w in words)
        label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
        return {"model": name, "label": label, "score": score, **self._me()}

    @snakepit.method
    def train(self, data: list, epochs: int = 10, name: str = "trained"):
        """Stream one progress chunk per epoch; return the new model's id."""
        for epoch in range(1, epochs + 1):
            snakepit.current_call().check_cancelled()
            time.sleep(0.15)  # the "work"
            loss = 1.0 / epoch + 0.05 * math.sin(epoch) * len(data) / (len(data) + 1)
            yield {"epoch": epoch, "epochs": epochs, "loss": round(loss, 4)}
        self.models[name] = {"name": name, "weights": dict(_LEXICON), "loaded_at": time.time()}
        snakepit.report_loaded(sorted(self.models))
        return {"model": name, "epochs": epochs, **self._me()}

    def health_check(self) -> dict:
        return {"loaded_models": sorted(self.models)}
