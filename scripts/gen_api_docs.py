"""Write docs/api/python.md, the Python API reference, from the package's docstrings.

    .venv/bin/python scripts/gen_api_docs.py [OUT_DIR]     # default: docs/api

Documents every name in ``snakepit_py.__all__`` and the public modules users
import (``MODULES`` below), each with its signature (annotations as written)
and its docstring; classes with their public methods and properties. The
output depends on the source alone (no addresses, no paths, no dates), so
tests/test_api_docs.py can check the committed page is up to date. Imports only
what the documented modules import themselves: ``snakepit_py.client`` imports
grpc; nothing here imports ray or numpy.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# (module, what it is for): the modules users import, in reading order.
MODULES = [
    ("snakepit_py", "Writing a worker: the decorator, the call context, events, the errors."),
    ("snakepit_py.beam", "Calling functions the BEAM serves, from worker code."),
    ("snakepit_py.etf", "The Erlang External Term Format codec on its own."),
    ("snakepit_py.errors", "The error tree (every name is also importable from `snakepit_py`)."),
    ("snakepit_py.testing", "Testing workers from pytest with no BEAM."),
    ("snakepit_py.pytest_plugin", "The `snakepit_worker` pytest fixture."),
    ("snakepit_py.client", "A Python client for a worker served over gRPC (the `grpc` extra)."),
]

# Modules with no __all__: the names they document.
EXPORTS = {"snakepit_py.pytest_plugin": ["snakepit_worker"]}

# Members that are the runtime's, not the user's (public names on classes users are
# handed, never build): left out, as are the constructors of those classes.
INTERNAL = {
    "snakepit_py.CallContext": (
        "add_credit emit enter runs_here started leave_user close request_cancel "
        "beam_wait_begin beam_wait_end interrupt"
    ).split(),
    "snakepit_py.testing.PendingCall": ["lost"],
}
HANDED_OUT = {
    "snakepit_py.CallContext",
    "snakepit_py.testing.PendingCall",
    "snakepit_py.testing.Stream",
    "snakepit_py.client.GrpcCall",
    "snakepit_py.client.GrpcStream",
}

WIDTH = 88  # a longer signature is shown one parameter a line

SECTIONS = ("Args", "Arguments", "Returns", "Yields", "Raises", "Attributes", "Example", "Note")


class _Text:
    """An annotation shown as written in the source (``from __future__ import annotations``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _annotation(ann: Any) -> Any:
    if ann is inspect.Parameter.empty:
        return ann
    if isinstance(ann, str):
        return _Text(ann)
    if isinstance(ann, type):
        return _Text(ann.__qualname__ if ann.__module__ == "builtins" else ann.__name__)
    return _Text(re.sub(r"\b(?:typing|collections\.abc|builtins)\.", "", repr(ann)))


def _default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return value
    text = repr(value)
    if " at 0x" in text or text.startswith("<"):
        text = getattr(value, "__name__", None) or type(value).__name__
    return _Text(text)


def signature(obj: Any, head: str, *, drop_self: bool = False) -> str:
    """``head(a: int, b: int = 1) -> int``, one parameter a line when that is long;
    ``head`` alone for an object with no signature."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return head
    params = [
        p.replace(annotation=_annotation(p.annotation), default=_default(p.default))
        for p in sig.parameters.values()
    ]
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    sig = sig.replace(parameters=params, return_annotation=_annotation(sig.return_annotation))
    line = head + str(sig)
    if len(line) <= WIDTH:
        return line
    parts: list[str] = []  # str(sig)'s parts, with its "/" and "*" markers
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and (i == 0 or params[i - 1].kind < p.KEYWORD_ONLY):
            if not any(q.kind is q.VAR_POSITIONAL for q in params):
                parts.append("*")
        parts.append(str(p))
        last_positional = p.kind is p.POSITIONAL_ONLY
        if last_positional and (i + 1 == len(params) or params[i + 1].kind is not p.kind):
            parts.append("/")
    ret = ""
    if sig.return_annotation is not inspect.Signature.empty:
        ret = f" -> {inspect.formatannotation(sig.return_annotation)}"
    return head + "(\n" + "".join(f"    {part},\n" for part in parts) + ")" + ret


def _roles(text: str) -> str:
    """reST to Markdown, inline: ``x`` -> `x`, :class:`~a.B` -> `B`, :func:`a.b` -> `a.b`."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: "`" + _short(m) + "`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _short(m: re.Match[str]) -> str:
    whole = m.group(0)
    target = m.group(1)
    return target.rsplit(".", 1)[-1] if "`~" in whole else target


def _fence(lang: str, lines: list[str]) -> list[str]:
    body = textwrap.dedent("\n".join(lines)).strip("\n")
    return ["```" + lang, *body.split("\n"), "```", ""]


def _indented(lines: list[str], i: int) -> tuple[list[str], int]:
    """The run of blank or indented lines from ``i``, and the index after it."""
    end = i
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(" ")):
        end += 1
    return lines[i:end], end


def _blank(out: list[str]) -> None:
    """A blank line before what comes next, unless there is one."""
    if out and out[-1]:
        out.append("")


def markdown(doc: str) -> str:
    """A docstring as Markdown: ``>>>`` examples as ```pycon, ``::`` blocks as ```text,
    Google-style sections (``Args:``...) as bold headings with bullet lists."""
    lines = inspect.cleandoc(doc).split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(">>>"):
            end = i
            while end < len(lines) and lines[end].strip():
                end += 1
            _blank(out)
            out += _fence("pycon", lines[i:end])
            i = end
            continue
        if stripped.endswith("::") and not stripped.startswith(":"):
            text = stripped[:-1] if stripped != "::" else ""
            if text:
                out.append(_roles(line.rstrip()[:-1]))
            block, i = _indented(lines, i + 1)
            _blank(out)
            out += _fence("text", block)
            continue
        if line.startswith(" ") and (not out or not out[-1]):
            block, i = _indented(lines, i)  # an indented block after a blank line: a literal one
            out += _fence("text", block)
            continue
        heading = stripped.rstrip(":")
        if stripped.endswith(":") and heading in SECTIONS and not line.startswith(" "):
            _blank(out)
            out += [f"**{heading}:**", ""]
            block, i = _indented(lines, i + 1)
            items: list[str] = []
            for item in block:
                if item.strip() and len(item) - len(item.lstrip()) <= 4:
                    items.append("- " + item.strip())
                elif item.strip() and items:
                    items[-1] += " " + item.strip()
            out += [_roles(_item(t)) for t in items] + [""]
            continue
        out.append(_roles(line.rstrip()))
        i += 1
    return "\n".join(out).strip("\n")


def _item(text: str) -> str:
    """``- name: what`` -> ``- `name`: what`` (Args/Raises entries)."""
    m = re.match(r"- ([\w*]+(?:, [\w*]+)*(?: \([^)]*\))?): (.*)", text)
    if not m:
        return text
    return f"- `{m.group(1)}`: {m.group(2)}"


def _anchor(title: str) -> str:
    """GitHub's heading anchor for ``title``."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _own_doc(obj: Any) -> str | None:
    doc = obj.__doc__ if isinstance(obj.__doc__, str) else None
    if isinstance(obj, type) and doc is not None:
        # an undocumented exception class inherits Exception's docstring
        for base in obj.__mro__[1:]:
            if base.__doc__ == doc and base.__module__ == "builtins":
                return None
    return doc


def _members(cls: type, skip: Any = ()) -> list[tuple[str, Any]]:
    """Public methods and properties the package defines on ``cls`` or its bases, in
    definition order, the class's own first."""
    seen: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is object or not klass.__module__.startswith("snakepit_py"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen or name in skip:
                continue
            if isinstance(value, (staticmethod, classmethod)):
                seen[name] = value.__func__
            elif isinstance(value, property) or inspect.isfunction(value):
                seen[name] = value
    return list(seen.items())


class Writer:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.documented: dict[int, str] = {}  # id(obj) -> heading of its first entry
        self.public: dict[int, str] = {}  # id(obj) -> the first public name it has

    def public_name(self, cls: type) -> str:
        """A base class's public name, else its bare name (a private base's module is no
        place to look it up)."""
        if cls.__module__ == "builtins":
            return cls.__qualname__
        if id(cls) in self.public:
            return self.public[id(cls)]
        if cls.__module__.startswith("snakepit_py"):
            return cls.__qualname__
        return f"{cls.__module__}.{cls.__qualname__}"

    def emit(self, *lines: str) -> None:
        self.out.extend(lines)

    def doc(self, obj: Any) -> None:
        doc = _own_doc(obj)
        self.emit(markdown(doc) if doc else "*(no docstring)*", "")

    def entry(self, qualname: str, obj: Any) -> None:
        title = f"`{qualname}`"
        if id(obj) in self.documented:
            first = self.documented[id(obj)]
            self.emit(f"### {title}", "", f"The same object as [{first}](#{_anchor(first)}).", "")
            return
        self.documented[id(obj)] = title
        if inspect.ismodule(obj):
            self.emit(f"### {title}", "", f"A module: see [{title}](#{_anchor(title)}).", "")
            return
        if isinstance(obj, type):
            kind = "exception" if issubclass(obj, BaseException) else "class"
            bases = [b for b in obj.__bases__ if b is not object]
            self.emit(f"### {title}", "")
            init: Any = vars(obj).get("__init__", obj)
            head = f"{kind} {obj.__name__}"
            if kind == "class" and qualname not in HANDED_OUT:  # (users are handed those)
                head = signature(init, head, drop_self=init is not obj)
            based = ", ".join(f"`{self.public_name(b)}`" for b in bases)
            self.emit(f"```text\n{head}\n```", "")
            if based:
                self.emit(f"Bases: {based}", "")
            self.doc(obj)
            self._base_options(obj, init)
            for name, member in _members(obj, skip=INTERNAL.get(qualname, ())):
                self._member(qualname, name, member)
            return
        if callable(obj):
            self.emit(f"### {title}", "", f"```text\n{signature(obj, obj.__name__)}\n```", "")
            self.doc(obj)
            return
        self.emit(f"### {title}", "", f"```text\n{obj!r}\n```", "")

    def _base_options(self, cls: type, init: Any) -> None:
        """A constructor that passes ``**options`` on to an internal base's: show that
        one's signature and docstring, which document the options."""
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return
        for base in cls.__mro__[1:]:
            if id(base) in self.public or not base.__module__.startswith("snakepit_py"):
                continue
            if "__init__" in vars(base) and _own_doc(base):
                self.emit(
                    f"**Options**: those of its internal base `{base.__name__}`:",
                    "",
                    "```text",
                    signature(vars(base)["__init__"], base.__name__, drop_self=True),
                    "```",
                    "",
                )
                self.doc(base)
                return

    def _member(self, owner: str, name: str, member: Any) -> None:
        if isinstance(member, property):
            self.emit(f"#### `{owner}.{name}` (property)", "")
            if member.fget is not None:
                ret = inspect.signature(member.fget).return_annotation
                if ret is not inspect.Signature.empty:
                    self.emit(f"```text\n{name}: {_annotation(ret)!r}\n```", "")
            self.doc(member)
            return
        self.emit(f"#### `{owner}.{name}`", "")
        self.emit(f"```text\n{signature(member, name, drop_self=True)}\n```", "")
        self.doc(member)


def generate() -> str:
    w = Writer()
    w.emit(
        "# Python API reference",
        "",
        "<!-- Generated by scripts/gen_api_docs.py from the docstrings: do not edit; "
        "run `make docs`. -->",
        "",
        "What users import from `snakepit_py`, generated from the docstrings. "
        "See [the landing page](../api_reference.md) for what counts as public.",
        "",
    )
    for name, what in MODULES:
        w.emit(f"- [`{name}`](#{_anchor(name)}): {what}")
    w.emit("")
    modules = [(name, importlib.import_module(name)) for name, _ in MODULES]
    for name, module in modules:
        for export in EXPORTS.get(name) or module.__all__:
            w.public.setdefault(id(getattr(module, export)), f"{name}.{export}")
    for name, module in modules:
        w.emit(f"## {name}", "")
        w.doc(module)
        exports = EXPORTS.get(name) or list(module.__all__)
        for export in exports:
            if export.startswith("__"):
                w.emit(f"### `{name}.{export}`", "", "`str`: the package's version.", "")
                continue
            w.entry(f"{name}.{export}", getattr(module, export))
    return "\n".join(w.out).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]) if argv else ROOT / "docs" / "api"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "python.md").write_text(generate())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
