"""A file processed line by line, each result streamed as soon as it is ready.

    snakepit-py call examples/file_lines.py word_counts README.md

With a ``credit`` the caller paces the reading: the file is read no faster
than the results are consumed, so memory stays flat for any file size.
"""

import snakepit_py as snakepit


@snakepit.method
def word_counts(path: str, skip_blank: bool = True):
    """Stream ``{line, words}`` for each line of ``path``; returns the totals."""
    lines = words = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if skip_blank and not line.strip():
                continue
            count = len(line.split())
            lines += 1
            words += count
            yield {"line": number, "words": count}
    return {"lines": lines, "words": words}


@snakepit.method
def grep(path: str, needle: str):
    """Stream ``{line, text}`` for every line containing ``needle``; returns the match count."""
    found = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if needle in line:
                found += 1
                yield {"line": number, "text": line.rstrip("\n")}
    return found
