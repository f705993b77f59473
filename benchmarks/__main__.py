"""``python -m benchmarks`` (``make bench``): run every benchmark, print a table, write JSON.

Each case runs in a fresh child process pinned to one core, several times; figures are reported as
min / median / max and as ratios to the baseline (the old approach) measured in the same invocation,
because these machines are noisy. Corpora are generated deterministically into benchmarks/corpora/.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from queue import Empty
from typing import Any

import orjson

from benchmarks.cases import CASES, child

HERE = Path(__file__).resolve().parent


def run_case(name: str, workdir: Path, scale: float, cpu: int) -> dict[str, Any]:
    """Run one case once in a pinned child process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(name, str(workdir), scale, cpu, queue))
    proc.start()
    deadline = time.monotonic() + 1800
    result: dict[str, Any] | None = None
    while result is None and time.monotonic() < deadline:
        try:
            result = queue.get(timeout=1)
        except Empty:
            if not proc.is_alive() and queue.empty():
                result = {"error": f"child exited with code {proc.exitcode} without a result"}
    proc.join(60)
    if result is None:
        proc.kill()
        result = {"error": "timed out after 30 minutes"}
    if result.get("lines") and result.get("seconds"):
        result["lines_per_s"] = result["lines"] / result["seconds"]
    return result


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """min/median/max of the numeric fields over repetitions (the last sample's other fields)."""
    out: dict[str, Any] = dict(samples[-1])
    for key, value in samples[-1].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = [s[key] for s in samples if key in s]
            out[key] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    out["runs"] = len(samples)
    return out


def med(results: dict[str, Any], case: str, key: str) -> float:
    """The median of a field of a case (0.0 when missing)."""
    value = results.get(case, {}).get(key)
    if isinstance(value, dict):
        return float(value["median"])
    return float(value or 0.0)


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) rows."""
    base = med(r, "baseline", "lines_per_s") or 1.0
    rows: list[tuple[str, str, bool]] = []
    if "replay" in r:
        lps = med(r, "replay", "lines_per_s")
        rss = r["replay"]["peak_rss_mb"]["max"]
        rows += [
            ("replay ≥ 1,000,000 lines/s", f"{lps:,.0f} lines/s", lps >= 1_000_000),
            ("replay ≥ 75× baseline", f"{lps / base:.1f}×", lps / base >= 75),
            ("replay peak RSS ≤ 150 MB", f"{rss:.0f} MB", rss <= 150),
        ]
    for case, label in (("live_syslog", "syslog TCP"), ("live_http", "HTTP logplex")):
        if case in r:
            lps = med(r, case, "lines_per_s")
            ok = bool(r[case].get("issues_correct"))
            rows.append((f"live {label} ≥ 400,000 lines/s, issues correct", f"{lps:,.0f} lines/s, correct={ok}",
                         lps >= 400_000 and ok))  # fmt: skip
    if "runs_10" in r and "runs_10000" in r:
        ratio = med(r, "runs_10000", "lines_per_s") / max(1.0, med(r, "runs_10", "lines_per_s"))
        rows.append(("10,000 open runs within 10% of 10", f"{ratio:.2f}× of 10-run throughput", ratio >= 0.9))
    if "memory_10000_runs" in r:
        mb = med(r, "memory_10000_runs", "rss_growth_mb")
        rows.append(("10,000 open runs with full rings ≤ 200 MB", f"{mb:.0f} MB", mb <= 200))
    if "patterns_default" in r and "patterns_500" in r:
        ratio = med(r, "patterns_500", "lines_per_s") / max(1.0, med(r, "patterns_default", "lines_per_s"))
        rows.append(("500 patterns cost ≤ 20% throughput", f"{ratio:.2f}× of default-pack throughput", ratio >= 0.8))
    if "flush_latency" in r:
        p99 = r["flush_latency"]["flush_p99_ms"]["max"]
        rows.append(("flush of 100 issues p99 ≤ 50 ms", f"{p99:.1f} ms (worst p99 of runs)", p99 <= 50))
    if "replay" in r and "replay_100k" in r:
        ratio = med(r, "replay", "seconds") / max(1e-9, med(r, "replay_100k", "seconds"))
        lines_ratio = med(r, "replay", "lines") / max(1.0, med(r, "replay_100k", "lines"))
        rows.append((f"{lines_ratio:.0f}× the lines ≤ 11× the time", f"{ratio:.1f}×", ratio <= 11 * lines_ratio / 10))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--only", action="append", choices=sorted(CASES), help="run only these cases (repeatable)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions per case (default 3)")
    p.add_argument("--scale", type=float, default=1.0, help="scale every corpus (0.1 for a quick look)")
    p.add_argument("--out", default=str(HERE / "out" / "results.json"), help="JSON results file")
    p.add_argument("--workdir", default=str(HERE / "corpora"), help="where corpora are generated")
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    names = args.only or list(CASES)
    if "baseline" not in names:
        names = ["baseline", *names]
    results: dict[str, Any] = {}
    print(f"stream-triage benchmarks · {platform.python_version()} · {os.cpu_count()} CPUs · scale {args.scale}")
    print(f"{'case':<20} {'lines/s (min / median / max)':>40} {'× baseline':>11} {'peak RSS':>9}  notes")
    for name in names:
        samples = []
        for _ in range(args.repeat):
            sample = run_case(name, workdir, args.scale, cpu=0)
            if "error" in sample:
                print(f"{name:<20} ERROR {sample['error']}")
                break
            samples.append(sample)
        if not samples:
            continue
        results[name] = summarise(samples)
        r = results[name]
        lps = r.get("lines_per_s", {"min": 0, "median": 0, "max": 0})
        base = med(results, "baseline", "lines_per_s") or 1
        notes = ", ".join(
            f"{k}={_fmt(v)}" for k, v in r.items()
            if k not in {"lines", "seconds", "lines_per_s", "peak_rss_mb", "runs"}
        )  # fmt: skip
        print(
            f"{name:<20} {lps['min']:>12,.0f} / {lps['median']:>11,.0f} / {lps['max']:>11,.0f} "
            f"{lps['median'] / base:>10.1f}× {r['peak_rss_mb']['max']:>7.0f}MB  {notes}",
            flush=True,
        )
    rows = targets(results)
    if rows:
        print("\ntarget                                              measured                          met")
        for target, measured, met in rows:
            print(f"{target:<51} {measured:<33} {'yes' if met else 'NO'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": platform.python_version(),
           "cpus": os.cpu_count(), "scale": args.scale, "repeat": args.repeat, "results": results,
           "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in rows]}  # fmt: skip
    out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"\nwrote {out}")
    return 0


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        v = v.get("median")
    if isinstance(v, float):
        return f"{v:,.2f}"
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
