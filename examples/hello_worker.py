"""The getting-started worker: a plain class, no decorators needed.

Try it by hand:

    snakepit-py call examples/hello_worker.py hello World
    snakepit-py call examples/hello_worker.py add 1 2
"""


class SimpleWorker:
    def hello(self, name):
        return f"Hello, {name}!"

    def add(self, a, b):
        return a + b
