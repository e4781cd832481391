"""Run directories on disk: `<out>/<study>/<run-name>/{config.yaml, meta.json, <study>.csv}`.

Every file is written to a temporary file in its own directory and moved into place with
os.replace, so a reader sees the old file or the new one, never half of one. meta.json is
written first with status `running` and last with the outcome, so it is the run's commit
record: a run whose meta.json says ok, diverged, failed or interrupted is finished.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from bncli import __version__
from bncli.errors import BncliError, RunError

DONE = ("ok", "diverged")  # statuses a resumed sweep does not redo
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=,-]{0,199}$")


def check_name(name: str, flag: str = "--name") -> str:
    """A run name is one plain path component: it can never point outside its parent."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise BncliError(f"{flag}: {name!r} is not a valid name: use letters, digits and . _ + = , - "
                         "(no '/', no '..', at most 200 characters)")
    return name


def check_out(out: Path | str) -> Path:
    out = Path(out)
    if ".." in out.parts:
        raise BncliError(f"--out: {str(out)!r} must not contain '..'; give the directory plainly "
                         "or as an absolute path")
    if out.exists() and not out.is_dir():
        raise RunError(f"--out: {out} exists and is not a directory")
    return out


def _write_error(path: Path, e: OSError) -> RunError:
    return RunError(f"cannot write {path}: {e.strerror or e}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's 0600 would hide results from others


def _sync_dir(directory: Path) -> None:
    # the rename itself is only durable once the directory is on disk (a power cut, not a crash)
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temporary file beside `path`, fsync it, then os.replace it into place.

    A reader (or a crash) sees the old file or the new one, never part of one. Any failure
    (disk full, no permission, interrupt) removes the temporary file and leaves `path` as it was.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _MODE)
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _sync_dir(path.parent)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise _write_error(path, e) from None
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_csv(path: Path, table) -> None:
    # na_rep "nan": a diverged layer's statistics are written as nan, not left blank
    atomic_write(path, table.to_csv(index=False, na_rep="nan", lineterminator="\n"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@cache
def git_commit() -> str | None:
    """The commit of the bncli source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def make_dir(path: Path) -> Path:
    """Create a new directory; an existing one is never reused."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:  # a file in the way, no permission, a NUL in the path
        raise RunError(f"cannot create {path.parent}: {getattr(e, 'strerror', None) or e}") from None
    try:
        path.mkdir()
    except FileExistsError:
        raise BncliError(f"--name: {path} already exists; bncli never overwrites a run, "
                         "choose another --name") from None
    except (OSError, ValueError) as e:
        raise RunError(f"cannot create {path}: {getattr(e, 'strerror', None) or e}") from None
    return path


def new_run_dir(out: Path, study: str, name: str | None, default: str) -> Path:
    """<out>/<study>/<name>. Explicit names must be new; default names get a -2, -3... suffix."""
    parent = check_out(out) / study
    if name is not None:
        return make_dir(parent / check_name(name))
    for k in range(1, 1000):
        candidate = parent / (default if k == 1 else f"{default}-{k}")
        if not candidate.exists():
            try:
                return make_dir(candidate)
            except RunError:  # the disk refused: no other name will do better
                raise
            except BncliError:  # lost a race with a parallel run: try the next suffix
                continue
    raise RunError(f"cannot find a free run name under {parent}")


def base_meta(study: str, cfg, device) -> dict:
    import torch

    dev = str(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    return {
        "study": study,
        "status": "running",
        "bncli_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": dev,
        "device_name": name,
        "dtype": cfg.dtype.value,
        "seed": cfg.seed,
        "torch_threads": torch.get_num_threads(),  # speed only: the numbers do not depend on it
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": None,
        "git_commit": git_commit(),
        "argv": sys.argv[1:] if sys.argv and "pytest" not in sys.argv[0] else None,
        "error": None,
    }


@dataclass
class Run:
    dir: Path
    result: Any  # studies.Result, or None when the run failed before producing one
    meta: dict


def _out_of_memory(e: BaseException) -> bool:
    import torch

    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def write_start(run_dir: Path, cfg, meta: dict) -> None:
    atomic_write(run_dir / "config.yaml", cfg.to_yaml())
    write_json(run_dir / "meta.json", meta)


def write_result(run_dir: Path, csv_name: str, result, meta: dict) -> None:
    if result is not None:
        write_csv(run_dir / csv_name, result.table)
    write_json(run_dir / "meta.json", meta)  # last: the run is finished once this says so


def execute(study: str, cfg, out: Path, name: str | None = None, progress=None) -> Run:
    """Check, run and record one study. Bad input raises BncliError before any directory exists."""
    from bncli import studies

    mod = studies.get(study)
    device = mod.preflight(cfg)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = new_run_dir(out, study, name, f"{stamp}-{mod.label(cfg)}")
    meta = base_meta(study, cfg, device)
    try:
        write_start(run_dir, cfg, meta)
    except BaseException:  # nothing ran yet: leave no directory behind, not even a half-started one
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        result = compute(study, cfg, device, meta, progress)
    except Exception as e:  # noqa: BLE001 - recorded, then re-raised for the caller
        _finish_or_fail(run_dir, mod.CSV, None, meta)
        if _out_of_memory(e):
            raise RunError(f"out of memory on {device}: {mod.describe_size(cfg)}; "
                           f"try smaller values (run recorded failed in {run_dir})") from None
        raise
    _finish_or_fail(run_dir, mod.CSV, result, meta)
    return Run(run_dir, result, meta)


def _finish_or_fail(run_dir: Path, csv_name: str, result, meta: dict) -> None:
    """write_result; when the disk refuses (full, read-only), record the run failed if it still can."""
    try:
        write_result(run_dir, csv_name, result, meta)
    except RunError as e:
        meta.update(status="failed", error=str(e))
        try:
            write_json(run_dir / "meta.json", meta)
        except RunError:
            pass  # meta.json still says running: the run is not mistaken for a finished one
        raise


def compute(study: str, cfg, device, meta: dict, progress=None):
    """Run one study in memory and fill `meta` with its outcome; touches no file.

    Returns the studies.Result (None when interrupted before the study's own loop). An
    exception leaves meta saying failed, with the error's first line, and propagates. Sweeps
    (and their worker processes) call this, then write the files with write_start/write_result.
    """
    from bncli import studies

    t0 = time.perf_counter()
    result = None
    try:
        result = studies.get(study).run(cfg, device, progress)
    except KeyboardInterrupt:  # outside the study's own loop: nothing computed to keep
        meta["status"] = "interrupted"
    except Exception as e:
        meta.update(status="failed", error=f"{type(e).__name__}: {e}".splitlines()[0],
                    wall_seconds=round(time.perf_counter() - t0, 6))
        raise
    meta["wall_seconds"] = round(time.perf_counter() - t0, 6)
    if result is not None:
        meta.update(status=result.status, **result.info)
    return result
