"""Who owns an output directory (a run of `train`/`meta`/`watch()`, a bench): one process at a
time, and a run is never replaced unasked — the one lock every command that writes a
directory over time takes (meta's run and the bench use it as the trainer does).

`<dir>/.lock` is held with `flock(2)` for as long as a process trains (or resumes) the run, or
runs the bench, and records its pid, host and start time. A second process fails at once with
:class:`RunLockedError` naming the holder. The kernel drops the lock when its holder dies, so
a lock left by a killed process is seen to be free and taken over (the file's inode is
checked after locking, so two processes can never both believe they hold it).
:func:`claim_run_dir` adds the other rule: a new run never lands in a directory that holds a
run unless asked to (`overwrite`); it takes the first free `<name>-2`, `<name>-3`, … instead.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import itertools
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from thalweg.outputs import numbered
from thalweg.train.config import ConfigError

__all__ = ["RunLock", "RunLockedError", "check_dirs", "claim_run_dir", "clear_run", "holds_run"]

#: what makes a directory "hold a run" (a lock alone does not)
_RUN_FILES = ("config.toml", "metrics.jsonl", "best.pt", "best.prev.pt", "summary.json")


class RunLockedError(RuntimeError):
    """Another live process owns the directory (`what`: "run", "bench")."""

    def __init__(self, root: Path, holder: dict[str, Any], what: str = "run") -> None:
        self.root, self.holder = root, holder
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
               f"{holder.get('started', '?')}") if holder else "a process that is starting up"
        super().__init__(f"{what} {root} is in use by another thalweg process ({who}); wait for "
                         f"it to finish, or give this {what} another name (--name)")


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


class RunLock:
    """An exclusive, crash-safe lock on one run (or bench) directory (see the module docstring)."""

    def __init__(self, root: str | Path, what: str = "run") -> None:
        self.root, self.what = Path(root), what
        self.path = self.root / ".lock"
        self._fd: int | None = None
        self._created = False
        #: the holder recorded in a stale lock this process took over, if any
        self.took_over: dict[str, Any] | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError` at once (OSError: the disk refused)."""
        self._created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                for _ in range(20):  # the holder may be writing its record right now
                    if holder:
                        break
                    time.sleep(0.01)
                    holder = _read(fd)
                os.close(fd)
                raise RunLockedError(self.root, holder, self.what) from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(fd).st_ino:  # released and unlinked meanwhile: lock anew
                os.close(fd)
                continue
            break
        self.took_over = _read(fd) or None
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Unlink and unlock (unlink first, while still holding it); remove the directory if
        this lock created it and nothing else was written there."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
        if self._created:
            with contextlib.suppress(OSError):
                self.root.rmdir()

    def takeover_note(self) -> str | None:
        """What to tell the user when this lock was taken over from a dead process, else None."""
        h = self.took_over
        if not h:
            return None
        return (f"took over the lock left in {self.root} by pid {h.get('pid')} on {h.get('host')} "
                f"(started {h.get('started')}), which is no longer running")

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holds_run(root: Path) -> bool:
    """True if `root` has any artefact of a run (config, metrics, best weights, checkpoints)."""
    if not root.is_dir():
        return False
    if any((root / name).exists() for name in _RUN_FILES):
        return True
    ck = root / "checkpoints"
    return ck.is_dir() and any(ck.iterdir())


def clear_run(root: Path) -> None:
    """Remove a run's artefacts (only ours: other files in the directory stay)."""
    for name in (*_RUN_FILES, "monitors.jsonl", "report.html"):
        (root / name).unlink(missing_ok=True)
    for name in ("checkpoints", "figures"):
        if (root / name).is_dir():
            shutil.rmtree(root / name)


def check_dirs(root: Path) -> None:
    """Refuse (a ConfigError naming the path) a directory to write that is a file, or lies
    under one."""
    out = root.parent
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError("", "out_dir", str(out), f"{p} is a file, not a directory")
            break
    if root.exists() and not root.is_dir():
        raise ConfigError("", "name", root.name, f"{root} is a file, not a directory")


def claim_run_dir(root: Path, *, overwrite: bool = False, resume: bool = False) -> tuple[RunLock, str | None]:
    """Lock the run directory for this process and return (lock, note).

    A locked `root` fails at once (:class:`RunLockedError`). Resuming, or with `overwrite`,
    `root` itself is used. Otherwise, if `root` holds a run, the first free `root-2`,
    `root-3`, … is locked instead and `note` says so.
    """
    check_dirs(root)
    lock = RunLock(root).acquire()
    if resume or overwrite or not holds_run(root):
        return lock, None
    lock.release()
    for cand in itertools.islice(numbered(root), 1, None):
        if (cand.exists() and not cand.is_dir()) or holds_run(cand):
            continue
        try:
            lock = RunLock(cand).acquire()
        except RunLockedError:
            continue
        if holds_run(cand):  # another process finished writing it just now
            lock.release()
            continue
        return lock, (f"{root} holds a run, so this one is {cand} (--overwrite replaces the old "
                      f"run, --resume {root} continues it)")
    raise ConfigError("", "name", root.name, "no free run name left")
