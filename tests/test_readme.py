"""Every Python example in the README runs as written (a PostgreSQL example against a throwaway server)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
# The DSN the README's PostgreSQL examples name; the test points it at its own server.
README_DSN = "postgresql://app@db.internal/agents"


def test_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.chdir(tmp_path)
    source = EXAMPLES[index]
    if README_DSN in source:
        source = source.replace(README_DSN, request.getfixturevalue("pg_dsn"))
    try:
        exec(compile(source, f"README example {index}", "exec"), {"__name__": "__readme__"})
    finally:
        if README_DSN in EXAMPLES[index]:
            from lash_store.postgres import close_shared_pools

            close_shared_pools()
