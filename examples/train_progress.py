"""A training run that reports progress as it goes, and stops cleanly when cancelled.

    snakepit-py call examples/train_progress.py train 5      # one JSON line per epoch
    (Ctrl-C cancels: the generator is closed at its next yield)

From Elixir: ``Snakepit.Stream.open(pool, %{method: "train", args: [5]}, fn ...)``.
"""

import math
import time

import snakepit_py as snakepit


class Trainer:
    def __init__(self):
        self.runs = 0
        self.last = None

    @snakepit.method
    def train(self, epochs: int = 10, seconds_per_epoch: float = 0.05):
        """Train for ``epochs`` epochs, streaming ``{epoch, loss}``; returns a model summary."""
        self.runs += 1
        loss = 1.0
        try:
            for epoch in range(1, epochs + 1):
                # Stand-in for real work, in small steps so a cancel lands quickly.
                end = time.monotonic() + seconds_per_epoch
                while time.monotonic() < end:
                    time.sleep(0.005)
                loss = round(math.exp(-epoch / 3), 4)
                yield {"epoch": epoch, "epochs": epochs, "loss": loss}
        finally:
            # Runs on completion and on cancel alike.
            self.last = {"run": self.runs, "final_loss": loss}
        return {"model_id": f"m-{self.runs}", "final_loss": loss}

    @snakepit.method
    def last_run(self):
        """What the last training run ended with (also after a cancel)."""
        return self.last


if __name__ == "__main__":
    snakepit.run()
