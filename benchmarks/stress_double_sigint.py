"""Two SIGINTs back to back, as a person pressing Ctrl-C twice fast sends them (issue 23: 11).

    .venv/bin/python benchmarks/stress_double_sigint.py --tries 20   # -> benchmarks/results_sigint.md

For each target (a single depth-study run, a sequential sweep, a pool sweep with --workers 2)
and each gap between the two signals (0, 1 ms and 10 ms), `--tries` times: start `python -m
bncli` with SIGINT at its default (as a terminal's process has it), wait until the work is under
way, send SIGINT, wait the gap, send SIGINT again, and give the process 10 s to exit. A try
passes when it exits 130 within the 10 s with no traceback, and what it says it saved is on
disk: the run's meta.json says interrupted with its layers_done rows in layers.csv; a sweep says
how many runs finished and each of those runs' meta.json says ok. A try that hangs is killed and
counted. tests/test_reliability.py runs one try of each target at gap 0; this script is the
repeated version, too slow for the suite (about 2 s a try).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GAPS = (0.0, 0.001, 0.01)
DEADLINE = 10.0  # s from the second signal to the exit

SLOW = """
import runpy, time
from bncli.studies.depth import mlp

real = mlp.step


def slow(net, device):  # 20 ms a layer past depth 100: the signals land mid-run on any machine
    step = real(net, device)
    return (lambda x, w: (time.sleep(0.02), step(x, w))[1]) if net.depth > 100 else step


mlp.step = slow
runpy.run_module("bncli", run_name="__main__", alter_sys=True)
"""

SWEEP = "study: depth-study\nbase: {width: 8, batch_size: 4}\ngrid: {depth: [3, 300, 301]}\nseeds: [0]\n"
POOL_SWEEP = "study: depth-study\nbase: {width: 64, batch_size: 16}\ngrid: {depth: [3, 40000, 40001]}\nseeds: [0]\n"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background job inherits SIGINT ignored


def target(kind: str, tmp: Path) -> tuple[list[str], Path]:
    """(the command, the file whose existence says the work is under way)."""
    if kind == "run":
        return ["-c", SLOW, "depth-study", "--depth", "1000", "--width", "8", "--out", "out", "--name", "r"], (
            tmp / "out" / "depth-study" / "r" / "meta.json"
        )
    if kind == "pool":  # the workers are fresh processes, without SLOW: long runs instead, signalled
        # once the short one is stored, while both long ones are under way
        (tmp / "s.yaml").write_text(POOL_SWEEP)
        ready = tmp / "out" / "sweeps" / "s" / "runs" / "depth=3,seed=0" / "meta.json"
        return ["-m", "bncli", "sweep", "s.yaml", "--out", "out", "--no-progress", "--workers", "2"], ready
    (tmp / "s.yaml").write_text(SWEEP)
    ready = tmp / "out" / "sweeps" / "s" / "runs" / "depth=300,seed=0" / "meta.json"
    return ["-c", SLOW, "sweep", "s.yaml", "--out", "out", "--no-progress"], ready


def saved_as_said(kind: str, tmp: Path, out: str) -> str | None:
    """None when what the output says was saved is on disk, else what is wrong."""
    if kind == "run":
        run = tmp / "out" / "depth-study" / "r"
        meta = json.loads((run / "meta.json").read_text())
        rows = sum(1 for _ in (run / "layers.csv").open()) - 1 if (run / "layers.csv").exists() else 0
        if meta.get("status") != "interrupted" or rows != meta.get("layers_done"):
            return f"status {meta.get('status')}, layers_done {meta.get('layers_done')}, {rows} rows"
        return None
    said = re.search(r"interrupted: (\d+) of (\d+) runs finished", out)
    if not said:
        return "no 'interrupted: k of n runs finished' line"
    runs = tmp / "out" / "sweeps" / "s" / "runs"
    ok = [p for p in runs.iterdir() if (p / "meta.json").exists() and '"status": "ok"' in (p / "meta.json").read_text()]
    if len(ok) != int(said.group(1)):
        return f"says {said.group(1)} finished, {len(ok)} runs are ok on disk"
    return None


def one_try(kind: str, gap: float) -> tuple[str, float]:
    """('ok' or what failed, seconds from the second signal to the exit)."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        args, ready = target(kind, tmp)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120", "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=tmp, env=env, text=True, preexec_fn=_default_sigint,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            end = time.monotonic() + 120
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > end:
                    return f"never got under way (exit {proc.poll()})", 0.0
                time.sleep(0.01)
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            if gap:
                time.sleep(gap)
            proc.send_signal(signal.SIGINT)
            second = time.monotonic()
            try:
                out, err = proc.communicate(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                return "hung", DEADLINE
            took = time.monotonic() - second
        finally:
            proc.kill()
            proc.wait()
        if proc.returncode != 130:
            return f"exit {proc.returncode}: {err.strip().splitlines()[-1:] if err.strip() else ''}", took
        if "Traceback" in err:
            return "traceback", took
        wrong = saved_as_said(kind, tmp, out)
        return ("ok" if wrong is None else wrong), took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results_sigint.md")
    a = p.parse_args()
    rows = []
    for kind in ("run", "sequential", "pool"):
        for gap in GAPS:
            results = [one_try(kind, gap) for _ in range(a.tries)]
            bad = [r for r, _ in results if r != "ok"]
            slowest = max(t for _, t in results)
            failures = "; ".join(sorted(set(bad))) or "-"
            rows.append(
                f"| {kind} | {gap * 1000:g} ms | {a.tries - len(bad)}/{a.tries} | {slowest:.2f} s | {failures} |"
            )
            print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    text = (
        "# Two SIGINTs back to back\n\n"
        f"Written by `benchmarks/stress_double_sigint.py --tries {a.tries}` on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, load average {load:.1f} at the end. "
        "A try passes when it exits 130 within 10 s of the second signal, with no traceback, and what it "
        "says it saved is on disk.\n\n"
        "| target | gap | passed | slowest exit after the second signal | failures |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )
    a.out.write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
