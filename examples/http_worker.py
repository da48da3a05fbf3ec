"""The worker behind the HTTP service example (examples/elixir/http_service.exs).

Each public method is reachable over HTTP: ``POST /predict`` calls
``predict``, ``POST /call/<method>`` any of them, ``GET /stream/count`` streams
``count``'s chunks. ``sleep`` and ``fail`` are there to show how a timeout and
an exception come out as HTTP statuses.

Try it by hand:

    snakepit-py call examples/http_worker.py predict "I love this"
    snakepit-py call examples/http_worker.py count 3
"""

import time

import snakepit_py as snakepit

# A pretend model: a word list scored by sentiment.
_LEXICON = {"good": 1.0, "great": 1.5, "love": 2.0, "bad": -1.0, "awful": -2.0, "hate": -2.0}


class HttpWorker:
    @snakepit.method
    def predict(self, text: str) -> dict:
        """Score `text`: a label and a score."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        score = sum(_LEXICON.get(w.strip(".,!?"), 0.0) for w in text.lower().split())
        label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
        return {"label": label, "score": score}

    @snakepit.method
    def count(self, n: int, delay: float = 0.01):
        """Stream ``{"i": 1}`` .. ``{"i": n}``; return their sum."""
        for i in range(1, int(n) + 1):
            time.sleep(float(delay))
            yield {"i": i}
        return {"sum": int(n) * (int(n) + 1) // 2}

    @snakepit.method
    def sleep(self, seconds: float) -> float:
        """Sleep (cancellably: a timed-out call frees the worker at once)."""
        call = snakepit.current_call()
        end = time.monotonic() + float(seconds)
        while time.monotonic() < end:
            call.check_cancelled()
            time.sleep(0.02)
        return float(seconds)

    @snakepit.method
    def fail(self, message: str = "boom"):
        """Raise ValueError(message)."""
        raise ValueError(message)

    @snakepit.method
    def echo(self, value=None):
        """Return `value` as it arrived (a JSON round trip through the BEAM)."""
        return value
