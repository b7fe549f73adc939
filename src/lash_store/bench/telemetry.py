"""What OpenTelemetry costs a commit: the same store with telemetry off and on, in one run.

The commit workload of :mod:`lash_store.bench.commit` (per turn a ~500-byte
user message, a ~1,500-byte reply and ~8 KB of tool state) is committed to
one session file per variant, turn by turn, rotating which variant goes first,
so every variant sees the same machine conditions:

- ``off``: ``TelemetryOptions(enabled=False)``, the store holds no recorder;
- ``api``: telemetry on with OpenTelemetry's global providers.  In this
  process no SDK is configured, so they are the API's no-op providers: what a
  deployment pays for having the ``otel`` extra installed but not set up;
- ``sdk``: telemetry on with an SDK ``TracerProvider`` and ``MeterProvider``
  that have no span processor and no metric reader (spans are built and
  dropped, points aggregated and never read): the cost of recording itself,
  without any exporter's.  Measured when ``opentelemetry-sdk`` is installed.

Reported per variant: the median and mean latency (median over runs of each
run's figure), and each ratio to ``off``.  The target is ``api`` / ``off`` at
most 1.05 on the median.  A measurement, never a pass/fail test.
"""

from __future__ import annotations

import gc
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from lash_store.bench import MissingExtra, format_us, progress, render_table, verdict, workdir
from lash_store.bench.commit import Workload
from lash_store.options import BlobProfile, StoreOptions, TelemetryOptions
from lash_store.service.session import SessionService
from lash_store.sqlite import Store

__all__ = ["FULL_TURNS", "QUICK_TURNS", "RATIO_TARGET", "format_report", "run"]

FULL_TURNS = 2_000
QUICK_TURNS = 200
RATIO_TARGET = 1.05
OFF, API, SDK = "off", "api", "sdk"


def _variants() -> dict[str, TelemetryOptions]:
    """The telemetry options of each variant; ``sdk`` only when the SDK is installed."""
    try:
        import opentelemetry.trace  # noqa: F401  (the API: without it there is nothing to compare)
    except ImportError as exc:
        raise MissingExtra("bench telemetry", ["opentelemetry-api"]) from exc
    variants = {OFF: TelemetryOptions(enabled=False), API: TelemetryOptions()}
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return variants
    variants[SDK] = TelemetryOptions(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
    return variants


def _global_providers() -> dict[str, str]:
    from opentelemetry import metrics, trace

    return {
        "tracer_provider": type(trace.get_tracer_provider()).__name__,
        "meter_provider": type(metrics.get_meter_provider()).__name__,
    }


def _run_once(
    directory: Path,
    turns: int,
    workload: Workload,
    variants: dict[str, TelemetryOptions],
    profile: BlobProfile,
    memory: bool,
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Commit ``turns`` turns to one fresh store per variant, interleaved; latencies in ns, and a check."""
    names = list(variants)
    samples: dict[str, list[int]] = {name: [] for name in names}
    revisions = dict.fromkeys(names, 0)
    clock = time.perf_counter_ns
    with ExitStack() as stack:
        stores: dict[str, SessionService] = {}
        for name, telemetry in variants.items():
            options = StoreOptions(blob_profile=profile, telemetry=telemetry)
            store = Store.memory(options) if memory else Store.open(directory / f"{name}.db", options)
            stack.callback(store.close)
            stores[name] = store
        gc.collect()
        for index in range(1, turns + 1):
            content = workload.turn(index)
            shift = (index - 1) % len(names)
            for name in names[shift:] + names[:shift]:
                commit = workload.commit(content, revisions[name])
                started = clock()
                result = stores[name].commit_runtime_state(commit)
                samples[name].append(clock() - started)
                revisions[name] = result.head_revision
        recording = {name: store._telemetry is not None for name, store in stores.items()}
    check = {
        "ok": all(revision == turns for revision in revisions.values())
        and recording == {name: name != OFF for name in names},
        "head_revisions": revisions,
        "recording": recording,
    }
    return samples, check


def run(
    *,
    turns: int,
    repeat: int,
    warmup_turns: int = 30,
    base_dir: str | None = None,
    verbose: bool = True,
    seed: int = 1,
    blob_profile: BlobProfile = BlobProfile.BALANCED,
    memory: bool = False,
) -> dict[str, Any]:
    """Run the telemetry cost benchmark and return its JSON-ready report."""
    if turns < 1 or repeat < 1 or warmup_turns < 0:
        raise ValueError("turns and repeat must be at least 1, warmup_turns at least 0")
    variants = _variants()
    medians: dict[str, list[float]] = {name: [] for name in variants}
    means: dict[str, list[float]] = {name: [] for name in variants}
    verification: dict[str, Any] = {"ok": True}
    started = time.perf_counter()
    with workdir(base_dir, "telemetry") as directory:
        for number in range(1, repeat + 1):
            run_dir = directory / f"run-{number}"
            run_dir.mkdir()
            progress(verbose, f"telemetry: run {number}/{repeat}: {len(variants)} variants x {turns:,} turns")
            if warmup_turns:
                warm = run_dir / "warmup"
                warm.mkdir()
                _run_once(warm, warmup_turns, Workload(seed + 1000 + number), variants, blob_profile, memory)
            samples, check = _run_once(run_dir, turns, Workload(seed), variants, blob_profile, memory)
            if verification["ok"]:  # keep the first failure
                verification = check
            for name, values in samples.items():
                medians[name].append(statistics.median(values) / 1000)
                means[name].append(statistics.fmean(values) / 1000)
    figures = {
        name: {"p50_us": statistics.median(medians[name]), "mean_us": statistics.median(means[name])}
        for name in variants
    }
    base = figures[OFF]
    ratios = {
        name: {
            "p50": figure["p50_us"] / base["p50_us"],
            "mean": figure["mean_us"] / base["mean_us"],
            "p50_delta_us": figure["p50_us"] - base["p50_us"],
        }
        for name, figure in figures.items()
        if name != OFF
    }
    return {
        "benchmark": "telemetry",
        "config": {
            "turns": turns,
            "repeat": repeat,
            "warmup_turns": warmup_turns,
            "store": "memory" if memory else "file",
            "blob_profile": blob_profile.value,
            "variants": list(variants),
            "global_providers": _global_providers(),
        },
        "variants": figures,
        "ratios": ratios,
        "target": {"api_p50_ratio_at_most": RATIO_TARGET, "ok": ratios[API]["p50"] <= RATIO_TARGET},
        "verification": verification,
        "elapsed_s": time.perf_counter() - started,
    }


_LABELS = {
    OFF: "off (enabled=False)",
    API: "on, API only (no-op providers)",
    SDK: "on, SDK without exporter",
}


def format_report(report: dict[str, Any]) -> str:
    """The report as a table, the target and the verification."""
    config = report["config"]
    rows = [
        [
            _LABELS[OFF],
            format_us(report["variants"][OFF]["p50_us"]),
            format_us(report["variants"][OFF]["mean_us"]),
            "1.000x",
            "-",
        ]
    ]
    for name in config["variants"][1:]:
        figure, ratio = report["variants"][name], report["ratios"][name]
        rows.append(
            [
                _LABELS[name],
                format_us(figure["p50_us"]),
                format_us(figure["mean_us"]),
                f"{ratio['p50']:.3f}x",
                f"{ratio['p50_delta_us']:+.1f} us",
            ]
        )
    target = report["target"]
    check = report["verification"]
    lines = [
        f"telemetry cost per commit: {config['turns']:,} turns x {config['repeat']} run(s), "
        f"{config['store']} stores, profile {config['blob_profile']}",
        render_table(["telemetry", "p50", "mean", "p50 vs off", "p50 delta"], rows),
        f"target: API only at most {RATIO_TARGET:.2f}x off: {report['ratios'][API]['p50']:.3f}x "
        f"{verdict(target['ok'])}",
        f"global providers: {config['global_providers']['tracer_provider']}, "
        f"{config['global_providers']['meter_provider']}",
        f"verification: {'OK' if check['ok'] else 'FAILED'} (head revisions {check.get('head_revisions')})",
    ]
    return "\n".join(lines)
