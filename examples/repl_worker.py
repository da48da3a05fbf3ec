"""An interactive Python session that keeps its namespace between calls.

WARNING: this worker EXECUTES THE CODE IT IS SENT. It must never face
untrusted input: anyone who can send it a call can do anything the worker's
OS user can. It exists to show a stateful, interactive use of the bridge
(a notebook-like console driven from the BEAM), nothing more.

    snakepit-py call examples/repl_worker.py run "x = 21"
"""

import contextlib
import io
import traceback

import snakepit_py as snakepit


class Repl:
    def __init__(self):
        self.namespace = {"__name__": "__repl__"}
        self.count = 0

    @snakepit.method
    def run(self, code: str) -> dict:
        """Execute ``code`` (statements or an expression); returns output and value."""
        self.count += 1
        out = io.StringIO()
        value = None
        error = None
        with contextlib.redirect_stdout(out):
            try:
                try:
                    compiled = compile(code, f"<cell {self.count}>", "eval")
                except SyntaxError:
                    exec(compile(code, f"<cell {self.count}>", "exec"), self.namespace)
                else:
                    value = eval(compiled, self.namespace)
            except Exception:
                error = traceback.format_exc(limit=-1)
        return {
            "cell": self.count,
            "stdout": out.getvalue(),
            "value": None if value is None else repr(value),
            "error": error,
        }

    @snakepit.method
    def names(self) -> list:
        """The names defined in the session."""
        return sorted(k for k in self.namespace if not k.startswith("__"))

    @snakepit.method
    def reset(self) -> bool:
        """Forget everything."""
        self.namespace = {"__name__": "__repl__"}
        return True
