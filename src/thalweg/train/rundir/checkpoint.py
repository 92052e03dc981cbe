"""Checkpoints that survive a power cut and never execute code.

A checkpoint is a plain `torch.save` file holding `{"format", "sha256", "state"}`. The SHA-256
is taken over the *content* of `state` (every tensor's dtype, shape and bytes, every other
value's repr, in key order), so it is independent of the zip layout. Writing goes to a temp
file, is fsynced, renamed over the target and the directory is fsynced; a disk fault is one
`OSError` naming the file. Loading uses `torch.load(weights_only=True)` and recomputes the
checksum; a truncated or corrupt newest checkpoint is reported and the previous one is used.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import signal
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT",
    "BackgroundWriter",
    "CheckpointError",
    "CheckpointManager",
    "content_digest",
    "load_checkpoint",
    "save_checkpoint",
    "save_generation",
]

FORMAT = "thalweg-checkpoint-2"  # 2: the state carries its config hash; best.pt two generations
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, not ours, or its checksum does not match."""


def _walk(obj: Any, h: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():  # hashlib reads the buffer in place (no copy, GIL released)
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _walk(obj[k], h)
        h.update(b"}")
    elif isinstance(obj, list | tuple):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for v in obj:
            _walk(v, h)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())


def content_digest(state: Any) -> str:
    """SHA-256 over a nested state (tensors by dtype/shape/bytes, the rest by repr)."""
    h = hashlib.sha256()
    _walk(state, h)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _debug_kill(point: str) -> None:
    """Test hook: `THALWEG_KILL_AT=save:N` SIGKILLs this process inside the N-th save."""
    spec = os.environ.get("THALWEG_KILL_AT", "")
    if not spec.startswith("save:"):
        return
    _debug_kill.count = getattr(_debug_kill, "count", 0) + (point == "temp-written")
    if point == "temp-written" and _debug_kill.count == int(spec.split(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)


def kill_point(step: int, writer: BackgroundWriter) -> None:
    """Test hook: `THALWEG_KILL_AT=step:N` SIGKILLs the process right after step N (once the
    checkpoints already submitted are on disk)."""
    spec = os.environ.get("THALWEG_KILL_AT", "")
    if spec == f"step:{step}":
        writer.wait()
        os.kill(os.getpid(), signal.SIGKILL)


class _Sink:
    """The file `torch.save` writes to, keeping the OSError (EFBIG, ENOSPC, EIO) that torch's
    zip writer would report only as 'unexpected pos'."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, b: Any) -> int:
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def disk_error(e: OSError, path: Path, what: str) -> OSError:
    """`e` restated as "cannot write <what>: <OS error>" naming `path` (same errno, so the same
    OSError subclass)."""
    return OSError(e.errno, f"cannot write {what}: {e.strerror or e}", str(path))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` atomically to `path` (temp file, fsync, rename, directory fsync); a disk
    fault raises OSError naming `path` and leaves any earlier file at `path` as it was."""
    path = Path(path)
    payload = {"format": FORMAT, "sha256": content_digest(state), "state": state}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            sink = _Sink(f)
            try:
                torch.save(payload, sink)
            except RuntimeError:
                if sink.error is None:
                    raise
                raise sink.error from None
            f.flush()
            os.fsync(f.fileno())
        _debug_kill("temp-written")
        os.replace(tmp, path)
    except OSError as e:
        raise disk_error(e, path, "checkpoint") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def save_generation(state: dict[str, Any], path: Path, previous: Path, *, rotate: bool = True) -> Path:
    """Write `state` to `path`, first keeping the file there as `previous` (a hard link renamed
    into place, so a good file exists at every moment). `rotate=False` keeps `previous` as is
    (when the file at `path` is not known to be good)."""
    if rotate and path.is_file():
        tmp = previous.with_name(f".{previous.name}.tmp-{os.getpid()}")
        try:
            tmp.unlink(missing_ok=True)
            try:
                os.link(path, tmp)
            except OSError:  # no hard links here: a copy does the same
                shutil.copyfile(path, tmp)
            os.replace(tmp, previous)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise disk_error(e, previous, "checkpoint") from None
    return save_checkpoint(state, path)


def _unreadable(e: Exception) -> str:
    """Why torch.load failed, in our words: never torch's advice to load with weights_only=False."""
    if isinstance(e, pickle.UnpicklingError):
        return ("it holds objects other than tensors and plain values, so it is not a thalweg "
                "checkpoint; it was not loaded")
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "weights_only" in first or "pickle" in first.lower():
        return "it is not a valid thalweg checkpoint; it was not loaded"
    return f"the file is truncated or not a torch checkpoint ({first.split('. ')[0][:160]})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint; raise :class:`CheckpointError` if it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {_unreadable(e)}") from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if isinstance(fmt, str) and fmt.startswith("thalweg-checkpoint-") and fmt != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {fmt}, written by another version of "
                              f"thalweg; this one reads {FORMAT} only")
    if fmt != FORMAT or not isinstance(payload.get("state"), dict):
        raise CheckpointError(f"checkpoint {path} is not a {FORMAT} file")
    digest = content_digest(payload["state"])
    if digest != payload.get("sha256"):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: checksum {digest[:12]}… does not match the "
            f"stored {str(payload.get('sha256'))[:12]}…"
        )
    return payload["state"]


class CheckpointManager:
    """`checkpoints/step_NNNNNNNN.pt` in a directory: save, keep the last N, load newest good."""

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = keep
        #: (path, reason) for every damaged checkpoint skipped by :meth:`load_latest`.
        self.skipped: list[tuple[Path, str]] = []
        self.passed_over: list[tuple[Path, str]] = []  # sound, but refused by `load_latest(accept=)`

    def path_for(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}.pt"

    def paths(self) -> list[Path]:
        """Existing checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir()
                 if (m := _STEP_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = save_checkpoint(state, self.path_for(step))
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def set_aside(self, path: Path) -> Path:
        """Move an unusable checkpoint into `unusable/` (kept for a look, out of the way of
        pruning and of the next resume)."""
        dest = self.directory / "unusable" / path.name
        dest.parent.mkdir(exist_ok=True)
        os.replace(path, dest)
        return dest

    def remove_stale_temps(self) -> list[Path]:
        """Delete temp files left by a save that was killed before its rename."""
        stale = [p for p in self.directory.glob(".step_*.pt.tmp-*")] if self.directory.is_dir() else []
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def candidates(self) -> Iterator[Path]:
        yield from reversed(self.paths())

    def load_latest(self, map_location: str | torch.device = "cpu",
                    accept: Callable[[dict[str, Any]], str | None] | None = None) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that verifies; damaged ones are reported and skipped. With
        `accept` (state → why not, or None), one that verifies but is refused is passed over
        (kept on disk: it is sound, only not wanted now, e.g. a rollback wants a finite model)."""
        for path in self.candidates():
            try:
                state = load_checkpoint(path, map_location)
            except CheckpointError as e:
                self.skipped.append((path, str(e)))
                warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=2)
                continue
            if accept is not None and (why := accept(state)) is not None:
                self.passed_over.append((path, why))
                continue
            return path, state
        return None


def snapshot(state: Any) -> Any:
    """A deep copy of every tensor in a nested state, so it can be written while training goes on."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(snapshot(v) for v in state)
    return state


class BackgroundWriter:
    """Runs checkpoint writes on one worker thread, in submission order, so the fsyncs overlap
    with training. After a failed write the writes queued behind it are dropped (the newest
    file on disk stays the last good one) and the error is raised in the training thread at
    the next `submit` or `wait`; `wait()` blocks until everything submitted is on disk."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[Any]] = []
        self._error: BaseException | None = None
        self._raised = False

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._error is not None:
            return
        try:
            fn(*args, **kwargs)
        except BaseException as e:
            self._error = e
            raise

    def _raise(self) -> None:
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._pending = [f for f in self._pending if not f.done()]
        self._raise()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thalweg-ckpt")
        self._pending.append(self._pool.submit(self._run, fn, args, kwargs))

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for f in pending:
            f.exception()
        self._raise()

    def close(self) -> None:
        """Finish the writes and stop the thread; an error not raised yet is dropped here (the
        success path always calls `wait()` first, a failing one already has its error)."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.exception()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
