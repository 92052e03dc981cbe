"""Checkpoints that survive a power cut and never execute code.

A checkpoint is a plain `torch.save` file holding `{"format", "sha256", "state"}`. The SHA-256
is taken over the *content* of `state` (every tensor's dtype, shape and bytes, every other
value's repr, in key order), so it is independent of the zip layout. Writing goes to a temp
file, is fsynced, renamed over the target and the directory is fsynced. Loading uses
`torch.load(weights_only=True)` and recomputes the checksum; a truncated or corrupt newest
checkpoint is reported and the previous one is used.
"""

from __future__ import annotations

import hashlib
import os
import re
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
]

FORMAT = "thalweg-checkpoint-1"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, or its checksum does not match."""


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


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` atomically to `path` (temp file, fsync, rename, directory fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "sha256": content_digest(state), "state": state}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        _debug_kill("temp-written")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint; raise :class:`CheckpointError` if it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
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

    def remove_stale_temps(self) -> list[Path]:
        """Delete temp files left by a save that was killed before its rename."""
        stale = [p for p in self.directory.glob(".step_*.pt.tmp-*")] if self.directory.is_dir() else []
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def candidates(self) -> Iterator[Path]:
        yield from reversed(self.paths())

    def load_latest(self, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that verifies; damaged ones are reported and skipped."""
        for path in self.candidates():
            try:
                return path, load_checkpoint(path, map_location)
            except CheckpointError as e:
                self.skipped.append((path, str(e)))
                warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=2)
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
    with training; `wait()` blocks until everything submitted is on disk (and re-raises)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[Any]] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thalweg-ckpt")
        done = [f for f in self._pending if f.done()]
        for f in done:
            f.result()
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(fn, *args))

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
