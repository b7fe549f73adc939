"""Run the frameworks' own test suites against lash-store's adapters, next to their stock backends.

    python scripts/external_suites.py [--only openai|langgraph] [--json FILE]

Nothing of the frameworks is committed to this repository: a virtual
environment with the frameworks and their test dependencies is built in a
cache directory outside it (``$LASH_EXTERNAL_CACHE``, default
``~/.cache/lash-store/external``), the source distributions of exactly the
installed versions are downloaded from the package index into it and
unpacked, and each suite runs twice in the same run: once as shipped (the
stock backend), once with our plugin redirecting it to lash-store.

A suite that cannot run (no index, a download or an install that fails, a
changed test tree) is a failure, never a skip: the script exits 1.  Exit 0
means every adapter run passed everything it ran, and its pass count equals
the stock run's minus exactly the tests deselected with a reason (see
``lash_store.testing.openai_sdk_shim.DESELECTED``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LASH_EXTERNAL_CACHE", Path.home() / ".cache" / "lash-store" / "external"))

# What the suites import, pinned where their test trees need it.  The frameworks themselves follow
# the adapters' extras; their test trees are fetched for whatever version that installs.
REQUIREMENTS = [
    f"-e{REPO}[postgres,langgraph,openai-agents]",
    "pytest>=8",
    "pytest-asyncio>=0.23",
    "pytest-mock",
    "inline-snapshot",
    "cryptography<46",  # the SDK's encryption tests patch cryptography.fernet's module-level time
    # LangGraph's test tree imports its stock savers (the comparison) and these plugins.
    "langgraph>=1.2,<2",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint-postgres",
    "pycryptodome",
    "syrupy",
    "pytest-dotenv",
    "pytest-repeat",
    "pytest-xdist",
    "httpx",
    "redis",
]

OPENAI_SUITES = [
    "tests/memory/test_session.py",
    "tests/memory/test_session_limit.py",
    "tests/deferred_session_writes",
    "tests/test_hitl_session_scenario.py",
    "tests/extensions/memory/test_encrypt_session.py",
    "tests/test_agent_runner.py",
    "tests/test_agent_runner_streamed.py",
]

LANGGRAPH_SUITES = [
    "tests/test_pregel.py",
    "tests/test_pregel_async.py",
    "tests/test_time_travel.py",
    "tests/test_time_travel_async.py",
    "tests/test_subgraph_persistence.py",
    "tests/test_subgraph_persistence_async.py",
    "tests/test_interruption.py",
]

_COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)")


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, text=True, capture_output=True, **kwargs)


def venv() -> Path:
    """The cached environment for these requirements (rebuilt when they change)."""
    key = hashlib.sha256("\n".join([sys.version, *REQUIREMENTS]).encode()).hexdigest()[:12]
    root = CACHE / f"venv-{key}"
    python = root / "bin" / "python"
    if not (root / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
        (root / ".ready").touch()
    else:  # the repository itself may have moved on: reinstalling it editable is quick
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", f"-e{REPO}"], check=True)
    return python


def installed_version(python: Path, distribution: str) -> str:
    done = _run([str(python), "-c", f"import importlib.metadata as m; print(m.version({distribution!r}))"])
    if done.returncode != 0:
        raise SystemExit(f"{distribution} is not installed in the suite environment:\n{done.stderr}")
    return done.stdout.strip()


def sdist(python: Path, distribution: str, version: str) -> Path:
    """The unpacked source distribution of exactly ``distribution==version`` (downloaded once)."""
    target = CACHE / "sdists" / f"{distribution}-{version}"
    if (target / ".ready").exists():
        return next(path for path in target.iterdir() if path.is_dir())
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        pip = [str(python), "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*pip, f"{distribution}=={version}", "-d", download], check=True)
        (archive,) = Path(download).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
    (target / ".ready").touch()
    return next(path for path in target.iterdir() if path.is_dir())


def pytest_counts(output: str) -> dict[str, int]:
    """The counts of pytest's closing line (``errors`` folded into ``error``)."""
    lines = [line for line in output.splitlines() if _COUNTS.search(line) and " in " in line]
    if not lines:
        return {}
    counts: dict[str, int] = {}
    for number, word in _COUNTS.findall(lines[-1]):
        counts[word.rstrip("s") if word.startswith("error") else word] = int(number)
    return counts


def run_pytest(python: Path, cwd: Path, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    done = _run(command, cwd=cwd, env={**os.environ, **(env or {})})
    counts = pytest_counts(done.stdout)
    failures = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"exit": done.returncode, "counts": counts, "failures": failures[:50], "tail": done.stdout[-2000:]}


def openai_suites(python: Path) -> dict[str, Any]:
    version = installed_version(python, "openai-agents")
    root = sdist(python, "openai-agents", version)
    stock = run_pytest(python, root, OPENAI_SUITES)
    lash = run_pytest(python, root, ["-p", "lash_store.testing.openai_sdk_shim", *OPENAI_SUITES])
    deselected = lash["counts"].get("deselected", 0)
    ok = (
        stock["exit"] == 0
        and lash["exit"] == 0
        and not lash["counts"].get("failed")
        and not lash["counts"].get("error")
        and lash["counts"].get("passed", 0) + deselected == stock["counts"].get("passed", -1) > 0
    )
    return {"suite": "openai-agents", "version": version, "stock": stock, "lash": lash, "ok": ok}


def langgraph_suites(python: Path) -> dict[str, Any]:
    """LangGraph's runtime tests, their ``sqlite*`` parameters only: stock SqliteSaver, then LashSaver."""
    version = installed_version(python, "langgraph")
    root = sdist(python, "langgraph", version)
    delta = sorted(
        str(path.relative_to(root))
        for path in (root / "tests").glob("test_delta_channel_*.py")
        if "benchmark" not in path.name
    )
    args = [*LANGGRAPH_SUITES, *delta, "-k", "sqlite", "-n", "2"]
    env = {"NO_DOCKER": "true"}  # no Redis or PostgreSQL containers: the sqlite parameters need none
    stock = run_pytest(python, root, args, env)
    lash = run_pytest(python, root, ["-p", "lash_store.testing.langgraph_redirect", *args], env)
    ok = (
        stock["exit"] == 0
        and lash["exit"] == 0
        and not lash["counts"].get("failed")
        and not lash["counts"].get("error")
        and lash["counts"].get("passed", 0) == stock["counts"].get("passed", -1) > 0
    )
    return {"suite": "langgraph", "version": version, "stock": stock, "lash": lash, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["openai", "langgraph"])
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    python = venv()
    results = []
    if args.only in (None, "openai"):
        results.append(openai_suites(python))
    if args.only in (None, "langgraph"):
        results.append(langgraph_suites(python))
    summary = {"ok": all(result["ok"] for result in results), "results": results}
    for result in results:
        stock, lash = result["stock"]["counts"], result["lash"]["counts"]
        verdict = "ok" if result["ok"] else "FAILED"
        print(f"{result['suite']} {result['version']}: stock {stock}; lash-store {lash}; {verdict}")
        if not result["ok"]:
            print(result["stock"]["tail"] if result["stock"]["exit"] else result["lash"]["tail"])
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
