"""Named SQL blocks: each backend keeps all of its SQL in one ``queries.sql`` file.

A block starts with a ``-- name: <query>`` line and runs until the next one.
A block may hold several statements (separated by ``;`` at the end of a
line); they run in order with the same parameters.  An empty block is a
deliberate no-op: a backend that needs no statement for a step (SQLite needs
no row locks, its write transactions already hold the file's write lock)
leaves the block empty instead of the service asking which backend it talks to.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")


def load(package: str, file_name: str = "queries.sql") -> dict[str, tuple[str, ...]]:
    """Parse ``file_name`` of ``package`` into ``{name: statements}``."""
    text = resources.files(package).joinpath(file_name).read_text(encoding="utf-8")
    return parse(text)


def parse(text: str) -> dict[str, tuple[str, ...]]:
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAME.match(line.strip())
        if match:
            name = match.group(1)
            if name in blocks:
                raise ValueError(f"query {name!r} is defined twice")
            current = blocks[name] = []
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: _statements("\n".join(lines)) for name, lines in blocks.items()}


def _statements(block: str) -> tuple[str, ...]:
    parts = re.split(r";[ \t]*$", block, flags=re.MULTILINE)
    return tuple(part.strip() for part in parts if part.strip())
