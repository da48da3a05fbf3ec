"""The example worker the deploy/ artifacts run: replace it with your own code.

The image copies this file to /app/worker.py; the Kubernetes manifests, the
systemd unit and the Compose file all serve /app/worker.py (or the path they
name), so a real deployment changes one COPY line.
"""

import snakepit_py as snakepit


class Worker:
    def __init__(self) -> None:
        self.models: dict[str, str] = {}

    @snakepit.method
    def load_model(self, name: str) -> list:
        self.models[name] = f"<model {name}>"
        snakepit.report_loaded(list(self.models))
        return list(self.models)

    @snakepit.method(timeout=5.0)
    def predict(self, name: str, text: str) -> dict:
        return {"model": name, "label": "positive" if "good" in text else "negative"}

    @snakepit.method
    def count(self, n: int):
        for i in range(n):
            yield i
        return "done"
