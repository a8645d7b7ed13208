"""Sections of docs/performance.md that another benchmark writes: each between its own
markers, kept when `bench.run` writes the file again."""

from __future__ import annotations

import re
from pathlib import Path

BLOCK = re.compile(r"\n*## [^\n]*\n+<!-- (?P<name>[a-z-]+):begin -->\n.*?<!-- (?P=name):end -->\n", re.S)


def write_block(path: Path, name: str, title: str, body: str) -> None:
    """Put `body` under `## title` between `<!-- name:begin/end -->` in `path` (added at the end if new)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"\n\n## {title}\n\n<!-- {name}:begin -->\n{body}\n<!-- {name}:end -->\n"
    for match in BLOCK.finditer(text):
        if match.group("name") == name:
            text = text[:match.start()] + block + text[match.end():]
            break
    else:
        text = text.rstrip("\n") + block
    path.write_text(text, encoding="utf-8")


def carried_blocks(path: Path) -> str:
    """The marked sections of `path` as it is now, to append to a rewrite of it."""
    if not path.exists():
        return ""
    return "".join(m.group(0) for m in BLOCK.finditer(path.read_text(encoding="utf-8")))
