"""python -m bncli.ray_watchdog PARENT_PID MARK: when PARENT_PID dies, kill what its local Ray left.

bncli.ray_backend starts it (_watch) beside a driver that starts a local Ray instance, in its
own session so a Ctrl-C spares it. Ray's own fate-sharing misses its agents, which outlive a
driver killed with -9 by minutes. The watchdog knows Ray's processes two ways: every process
seen below the driver while it lived, and every process whose environment holds MARK
(NAME=VALUE, set in the driver's environment while Ray started its GCS, raylet and agents and,
through the raylet, its workers). A process started just before the driver died, whose parent
Ray's fate-sharing had already ended, is never seen below the driver: it is known by its mark,
or, for an agent, by the raylet's pid in its environment.

Linux only (it reads /proc), and the standard library only, so it starts in a blink.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable


def below(roots: Iterable[int]) -> set[int]:
    """The pids below the roots in the process tree, as /proc shows it now: what a driver started
    is found by its place in the tree while the driver lives, whatever it did to its environment.
    The caller and what is below it are left out (the watchdog is the driver's child, and must
    not stop itself)."""
    me = os.getpid()
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:  # the name, in parentheses, may hold ") "
                kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
        except (OSError, ValueError, IndexError):  # not a process, or gone since listdir
            pass
    out: set[int] = set()
    todo = list(roots)
    while todo:
        for k in kids.get(todo.pop(), []):
            if k != me and k not in out:
                out.add(k)
                todo.append(k)
    return out


def marked(tokens: set[bytes]) -> set[int]:
    """The pids whose environment holds one of the tokens (whole NAME=VALUE entries): a process
    that left the driver's tree before the watchdog saw it (or that never was in it) still
    carries what it inherited from the process that started it."""
    me = os.getpid()
    out: set[int] = set()
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if d.isdigit() and int(d) != me and tokens & set(f.read().split(b"\0")):
                    out.add(int(d))
        except OSError:  # not a process, gone, or not ours to read
            pass
    return out


def started(pid: int) -> str | None:
    """The start time of pid (field 22 of /proc/PID/stat), None when it is gone or a zombie: a pid
    and its start time name one process, whatever reuses the pid later, and a zombie has
    already let go of its children."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    """Signal each pid, passing over those that are gone or not ours: one that already died must
    not spare the others."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def watch(parent: int, every: float = 0.5) -> dict[int, str | None]:
    """Look below parent every `every` seconds until it is gone or a zombie; returns what was seen
    there (pid -> start time) and still lasts. An entry is dropped when its pid's start time
    changes, so a pid reused below the driver is taken in afresh, and one reused elsewhere is
    spared."""
    seen: dict[int, str | None] = {}
    while True:
        look = below([parent])
        if started(parent) is None:  # gone, or a zombie: its children have already left its tree
            return seen
        seen = {p: t for p, t in seen.items() if started(p) == t}
        seen.update({p: started(p) for p in look if p not in seen})
        time.sleep(every)


def reap(seen: dict[int, str | None], mark: bytes) -> set[int]:
    """Kill what watch saw that still lasts and every process known by a mark: ours, or the pid of
    a process seen (a raylet) in RAY_RAYLET_PID, which Ray's agents are given because they write
    their titles over the start of their environment, ours with it. All are stopped first, so
    they start nothing more, and what is then below them is taken in, until nothing new is;
    returns the pids killed."""
    tokens = {mark} | {b"RAY_RAYLET_PID=%d" % p for p in seen}
    doomed = {p for p, t in seen.items() if started(p) == t} | marked(tokens)
    while True:
        signal_all(doomed, signal.SIGSTOP)
        more = below(doomed) - doomed
        if not more:
            break
        doomed |= more
    signal_all(doomed, signal.SIGKILL)
    return doomed


def main(argv: list[str] | None = None) -> None:
    """python -m bncli.ray_watchdog PARENT_PID MARK (MARK as NAME=VALUE)."""
    args = sys.argv[1:] if argv is None else argv
    parent, mark = int(args[0]), args[1].encode()
    reap(watch(parent), mark)


if __name__ == "__main__":
    main()
