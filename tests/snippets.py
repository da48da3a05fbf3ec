"""The code blocks of the docs, read the way tests/test_docs_snippets.py runs them.

A fenced block's language says what it is:

- ``python``, ``elixir``, ``sh``: code, run by the test (each block on its own,
  in a scratch directory per document, in the document's order);
- ``text`` or no language: output, diagrams, wire terms; not code;
- ``promql``: queries for Prometheus (the metrics they name are checked);
- ``pycon``, ``iex``: doctests, run where they are written (in the generated API
  reference: from the docstrings and ``@doc``\\s they come from).

An HTML comment right before a block (invisible when the page is rendered)
changes how it runs::

    <!-- snippet: file worker.py -->       written to the scratch directory, for the
                                           blocks after it (a file is checked by
                                           being used)
    <!-- snippet: continues -->            appended to the block before it, of the same
                                           language: they run as one program
    <!-- snippet: pytest -->               run with pytest (a test function)
    <!-- snippet: excerpt PATH -->         an excerpt of PATH (run by that file's own
                                           tests): every line is in PATH, in order
    <!-- snippet: checked-by TEST -->      TEST runs it (and must read this document)
    <!-- snippet: skip REASON -->          not run, and REASON says why (listed by the test)
    <!-- snippet: setup
    code                                   run before the block, not shown
    -->

Several comments may stack before one block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

RUN = {"python", "elixir", "sh"}
NOT_CODE = {"", "text", "promql"}
DOCTEST = {"pycon", "iex"}

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*snippet:\s*(\w[\w-]*)\s*(.*?)\s*(-->)?\s*$")


@dataclass
class Block:
    """One fenced block of a document, with the directives before it."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of the Markdown file ``path``, in order."""
    lines = path.read_text().splitlines()
    out: list[Block] = []
    pending: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        if directive:
            key, rest, closed = directive.groups()
            if not closed:  # a multi-line directive: its body runs to the closing -->
                body = [rest] if rest else []
                i += 1
                while i < len(lines) and lines[i].strip() != "-->":
                    body.append(lines[i])
                    i += 1
                rest = "\n".join(body)
            pending[key] = rest
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            indent, lang = fence.groups()
            start = i
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                text = lines[i]
                body.append(text[len(indent) :] if text.startswith(indent) else text)
                i += 1
            out.append(Block(path, start + 1, lang, "\n".join(body) + "\n", pending))
            pending = {}
            i += 1
            continue
        if line.strip():
            pending = {}  # a directive belongs to the block right after it
        i += 1
    return out


_LIST_ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s")


def indented_blocks(path: Path) -> list[int]:
    """Lines where ``path`` opens an indented (4-space) code block, which has no language.

    Such a block is code nobody runs: the docs fence every block instead. A
    line indented four spaces after a blank line counts unless the paragraph
    before the blank is a list item or its continuation.
    """
    found = []
    in_fence = False
    last = ""  # the last non-blank line outside a fence
    blank = False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if _FENCE.match(line) or (in_fence and line.strip() == "```"):
            in_fence = not in_fence
            last, blank = line, False
            continue
        if in_fence:
            continue
        if not line.strip():
            blank = True
            continue
        if (
            blank
            and line.startswith(("    ", "\t"))
            and not (last.startswith((" ", "\t")) or _LIST_ITEM.match(last))
        ):
            found.append(n)
        last, blank = line, False
    return found


def is_excerpt_of(code: str, source: str) -> bool:
    """True when every non-blank line of ``code`` is a line of ``source``, in order.

    Lines are compared stripped of indentation; a line ``...`` stands for
    lines left out.
    """
    wanted = [x.strip() for x in code.splitlines() if x.strip() and x.strip() != "..."]
    have = iter(x.strip() for x in source.splitlines())
    return all(any(w == h for h in have) for w in wanted)
