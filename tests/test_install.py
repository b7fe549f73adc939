"""``pip install lash-store`` without extras gives a working ``lash-store`` command.

``rich`` comes with the ``cli`` extra only.  Every command renders plain text
without it (:mod:`lash_store._output`).  The in-process tests hide rich from
the renderer; the wheel test installs the built wheel into a fresh virtual
environment that has nothing but the core dependencies and runs the command
there as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from lash_store import _output
from lash_store._output import Output, Table
from lash_store.cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK, main
from lash_store.sqlite.migrations import migrate_file

REPO = Path(__file__).resolve().parent.parent
SCHEMA_FIXTURES = REPO / "tests" / "fixtures" / "schema"
MARKUP = ("[/", "[bold", "[red", "[green", "[yellow", "[cyan", "[dim")


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Path:
    """A copy of the v3b fixture directory (a rich session.db and a factory root), migrated to the current layout."""
    target = tmp_path / "v3b"
    shutil.copytree(SCHEMA_FIXTURES / "v3b", target, ignore=shutil.ignore_patterns("expected.json"))
    for path in (target / "session.db", *sorted((target / "factory").glob("*.db"))):
        migrate_file(path)
    return target


# ---------------------------------------------------------------------------
# Plain rendering, in-process


def test_plain_table_aligns_columns_and_keeps_every_line() -> None:
    table = Table(title="Usage")
    table.add_column("source")
    table.add_column("tokens", justify="right")
    table.add_row("agent", "1,200")
    table.add_row("a much longer source\non two lines", "7")
    assert table.to_plain() == (
        "Usage\n"
        "source                tokens\n"
        "--------------------  ------\n"
        "agent                  1,200\n"
        "a much longer source       7\n"
        "on two lines\n"
    )
    bare = Table(show_header=False)
    bare.add_column("key")
    bare.add_column("value")
    bare.add_row("path", "/tmp/x.db")
    assert bare.to_plain() == "path  /tmp/x.db\n"
    with pytest.raises(ValueError):
        bare.add_row("one cell")


def test_plain_output_drops_styles_and_leaves_brackets_alone() -> None:
    out = Output(use_rich=False)
    assert out.rich is False and out.console is None
    assert out.styled("[not markup]", "red") == "[not markup]" and out.text("[b]x[/b]") == "[b]x[/b]"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["inspect", "{session}"], id="inspect"),
        pytest.param(["history", "{session}"], id="history"),
        pytest.param(["history", "{session}", "--active-path"], id="history --active-path"),
        pytest.param(["sessions", "{factory}"], id="sessions"),
        pytest.param(["verify", "{session}"], id="verify"),
        pytest.param(["gc", "{session}", "--dry-run", "--grace-ms", "0"], id="gc --dry-run"),
        pytest.param(["migrate", "{session}", "{factory}"], id="migrate"),
        pytest.param(["migrate", "--check", "{factory}"], id="migrate --check"),
        pytest.param(["gc", "{session}"], id="gc"),
        pytest.param(["vacuum", "{session}"], id="vacuum"),
        pytest.param(["export", "{session}", "-o", "{tmp}/export.json"], id="export"),
    ],
)
def test_every_command_renders_without_rich(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fixture_copy: Path,
    tmp_path: Path,
    command: list[str],
) -> None:
    monkeypatch.setattr(_output, "HAVE_RICH", False)
    places = {"session": fixture_copy / "session.db", "factory": fixture_copy / "factory", "tmp": tmp_path}
    code = main([part.format(**places) for part in command])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert captured.out and not any(tag in captured.out for tag in MARKUP), captured.out
    assert "Traceback" not in captured.err


def test_plain_inspect_shows_the_tables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fixture_copy: Path
) -> None:
    monkeypatch.setattr(_output, "HAVE_RICH", False)
    assert main(["inspect", str(fixture_copy / "session.db")]) == EXIT_OK
    out = capsys.readouterr().out
    for text in ("Session", "Checkpoint", "Usage", "Queue (3 batches)", "fixture-worker", "Attachment manifest"):
        assert text in out
    assert "\nsession        fixture-session\n" in out  # key/value rows aligned on the widest key
    assert "\n\nUsage\n" in out  # a blank line before each titled table


# ---------------------------------------------------------------------------
# The built wheel in a fresh environment


def _run(command: list[str | Path], *, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**env, "COLUMNS": "120"},
        check=False,
    )


def test_the_wheel_installs_without_extras_and_every_command_runs(tmp_path: Path, fixture_copy: Path) -> None:
    started = time.monotonic()
    dist = tmp_path / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "-w", dist], cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("lash_store-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        license_name = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert "MIT License" in archive.read(license_name).decode()
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata

    # A fresh environment with nothing but what pip installs for the wheel (its core dependencies).  The
    # environment gets no pip of its own: this process's pip installs into it, which saves seconds.
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python, script = venv / "bin" / "python", venv / "bin" / "lash-store"
    installed = _run([sys.executable, "-m", "pip", "--python", python, "install", wheel], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    probe = "import importlib.util as u; print(*(bool(u.find_spec(m)) for m in ('msgspec', 'zstandard', 'rich')))"
    assert _run([python, "-c", probe], cwd=tmp_path).stdout.split() == ["True", "True", "False"]

    session, factory = fixture_copy / "session.db", fixture_copy / "factory"
    old = tmp_path / "old.db"  # a file of the previous layout, for migrate
    shutil.copyfile(SCHEMA_FIXTURES / "v3a" / "session.db", old)
    runs = {
        "version": ([script, "--version"], EXIT_OK),
        "inspect": ([script, "inspect", session], EXIT_OK),
        "inspect --json": ([script, "inspect", session, "--json"], EXIT_OK),
        "history": ([script, "history", session, "--active-path"], EXIT_OK),
        "sessions": ([script, "sessions", factory], EXIT_OK),
        "verify": ([script, "verify", session], EXIT_OK),
        "gc --dry-run": ([script, "gc", session, "--dry-run"], EXIT_OK),
        "migrate --check": ([script, "migrate", "--check", old], EXIT_FAILED),
        "migrate": ([script, "migrate", old, factory], EXIT_OK),
        "demo": ([script, "demo", "--sessions", "1", "--messages", "2", "--workers", "1", "--no-chaos"], EXIT_OK),
        "help": ([script, "--help"], EXIT_OK),
        "missing file": ([script, "inspect", tmp_path / "missing.db"], EXIT_ERROR),
    }
    results = {name: _run(command, cwd=tmp_path) for name, (command, _code) in runs.items()}
    for name, (_command, code) in runs.items():
        result = results[name]
        assert result.returncode == code, f"{name}: {result.stdout}{result.stderr}"
        assert "Traceback" not in result.stderr, f"{name}: {result.stderr}"
        assert not any(tag in result.stdout for tag in MARKUP), f"{name}: {result.stdout}"
    assert results["version"].stdout.startswith("lash-store ")
    assert "Queue (3 batches)" in results["inspect"].stdout and "fixture-worker" in results["inspect"].stdout
    assert json.loads(results["inspect --json"].stdout)["head"]["head_revision"] == 4
    assert "alpha" in results["sessions"].stdout and "beta/with:odd chars" in results["sessions"].stdout
    assert results["verify"].stdout.rstrip().endswith("OK")
    assert f"{old}: migrated from revision 1" in results["migrate"].stdout
    assert "PASS: all" in results["demo"].stdout
    error = results["missing file"].stderr
    assert error.startswith("lash-store: error: no lash-store database at") and error.count("\n") == 1
    print(f"wheel build, install and commands: {time.monotonic() - started:.1f} s")
