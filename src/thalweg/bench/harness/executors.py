"""Where trials run: inline (for debugging), local worker processes (one torch thread each by
default), or Ray tasks on an existing cluster. Every executor turns a dead worker, a task
error or a trial far over its wall-clock budget into a record — never into the bench's end.

The protocol: `capacity` trials at a time; `submit(task_id, spec)`; `poll(timeout)` returns
finished `(task_id, record)` pairs; `close()`.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from thalweg.bench.harness.trial import environment, run_trial

__all__ = ["Executor", "InlineExecutor", "LocalExecutor", "RayExecutor", "failed_record", "make_executor"]

#: a trial still running this long after its wall-clock budget is killed (its own loop stops
#: at the budget; this catches a hang inside one step).
GRACE = (1.5, 30.0)


def failed_record(spec: dict[str, Any], status: str, error: str) -> dict[str, Any]:
    """The record of a trial that produced none itself (its worker died, or it hung)."""
    rec = {k: spec.get(k) for k in ("study", "trial", "phase", "ruleset", "workload", "submission",
                                    "study_index", "seed", "params", "config", "target", "metric", "group", "mode")}  # fmt: skip
    rec.update(step_budget=spec.get("steps"), status=status, error=error, reached=False, steps=None,
               time_to_target={"steps": None, "seconds": None}, final={}, final_metric=None,
               best={"metric": None, "step": None}, end_metric=None, cpu={},
               curve={"step": [], "seconds": [], "metric": []},
               started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), pid=None, seconds={})  # fmt: skip
    rec.update(environment())
    return rec


def _deadline(spec: dict[str, Any]) -> float:
    return float(spec["max_seconds"]) * GRACE[0] + GRACE[1]


class Executor(Protocol):
    capacity: int

    def submit(self, task_id: int, spec: dict[str, Any]) -> None: ...
    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]: ...
    def close(self) -> None: ...


class InlineExecutor:
    """Runs each trial in this process when submitted (workers = 0)."""

    capacity = 1

    def __init__(self) -> None:
        self._done: list[tuple[int, dict[str, Any]]] = []

    def submit(self, task_id: int, spec: dict[str, Any]) -> None:
        self._done.append((task_id, run_trial(spec)))

    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        pass


def _worker_main(conn: Connection, threads: int) -> None:
    """A worker process: receive specs, send records, exit when the bench goes away."""
    import torch

    torch.set_num_threads(threads)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task_id, spec = msg
        rec = run_trial(spec)
        try:
            conn.send((task_id, rec))
        except (BrokenPipeError, OSError):
            return


class _Slot:
    def __init__(self, ctx: Any, threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, threads), daemon=True)
        self.proc.start()
        child.close()
        self.task: tuple[int, dict[str, Any], float] | None = None

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.conn.send(None)
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


class LocalExecutor:
    """`workers` spawned processes; a worker that dies is replaced and its trial recorded."""

    def __init__(self, workers: int, threads: int = 1) -> None:
        self.capacity = max(1, workers)
        self.threads = threads
        self._ctx = mp.get_context("spawn")
        self._slots: list[_Slot | None] = [_Slot(self._ctx, threads) for _ in range(self.capacity)]

    def submit(self, task_id: int, spec: dict[str, Any]) -> None:
        i = next(i for i, s in enumerate(self._slots) if s is None or s.task is None)
        if self._slots[i] is None:  # a worker that died is replaced when next needed
            self._slots[i] = _Slot(self._ctx, self.threads)
        slot = self._slots[i]
        assert slot is not None
        slot.task = (task_id, spec, time.monotonic())
        slot.conn.send((task_id, spec))

    def _replace(self, slot: _Slot, kill: bool) -> None:
        slot.stop(kill=kill)
        self._slots[self._slots.index(slot)] = None

    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        busy = [s for s in self._slots if s is not None and s.task is not None]
        if not busy:
            return []
        ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout)
        out: list[tuple[int, dict[str, Any]]] = []
        now = time.monotonic()
        for slot in busy:
            assert slot.task is not None
            task_id, spec, started = slot.task
            if slot.conn in ready:
                try:
                    got = slot.conn.recv()
                except (EOFError, OSError):
                    got = None
                if got is not None:
                    slot.task = None
                    out.append(got)
                    continue
            if not slot.proc.is_alive() or slot.proc.sentinel in ready or slot.conn in ready:
                slot.proc.join(timeout=5)  # the pipe can close before the exit code is known
                code = slot.proc.exitcode
                out.append((task_id, failed_record(spec, "crashed", f"worker process died (exit code {code})")))
                self._replace(slot, kill=True)
            elif now - started > _deadline(spec):
                out.append((task_id, failed_record(
                    spec, "timeout", f"killed after {now - started:.0f} s (wall-clock budget {spec['max_seconds']} s)")))
                self._replace(slot, kill=True)
        return out

    def close(self) -> None:
        for s in self._slots:
            if s is not None:
                s.stop(kill=s.task is not None)


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _ray_trial(spec: dict[str, Any]) -> dict[str, Any]:
    return run_trial(spec)


class RayExecutor:
    """Trials as Ray tasks (`num_cpus = threads` each) on the cluster at `address`
    (None: start or join a local one); capacity = the cluster's CPUs / threads unless given."""

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int = 1) -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install 'thalweg[ray]'") from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            path = os.environ.get("PYTHONPATH")  # a source checkout reaches the workers too
            env = {"env_vars": {"PYTHONPATH": path}} if path else None
            ray.init(address=address, runtime_env=env, log_to_driver=False, include_dashboard=False)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = workers or max(1, cpus // max(1, threads))
        self._task = ray.remote(num_cpus=threads, max_retries=0)(_ray_trial)
        self._refs: dict[Any, tuple[int, dict[str, Any], float]] = {}

    def submit(self, task_id: int, spec: dict[str, Any]) -> None:
        self._refs[self._task.remote(spec)] = (task_id, spec, time.monotonic())

    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        if not self._refs:
            return []
        ready, _ = self._ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout)
        out: list[tuple[int, dict[str, Any]]] = []
        for ref in ready:
            task_id, spec, _ = self._refs.pop(ref)
            try:
                out.append((task_id, self._ray.get(ref)))
            except Exception as e:  # the task's worker died, or Ray failed it
                out.append((task_id, failed_record(spec, "crashed", f"ray task failed: {type(e).__name__}: {e}")))
        now = time.monotonic()
        for ref, (task_id, spec, started) in list(self._refs.items()):
            if now - started > _deadline(spec):
                self._ray.cancel(ref, force=True)
                self._refs.pop(ref)
                out.append((task_id, failed_record(spec, "timeout", f"ray task cancelled after {now - started:.0f} s")))
        return out

    def close(self) -> None:
        for ref in list(self._refs):
            self._ray.cancel(ref, force=True)
        if self._owns:
            self._ray.shutdown()


def make_executor(kind: str, workers: int | None, threads: int = 1, ray_address: str | None = None) -> Any:
    """`kind` local (workers = 0: inline; None: one per CPU) or ray (None: the cluster's CPUs)."""
    if kind == "ray":
        return RayExecutor(ray_address, workers or None, threads)
    if workers is None:
        workers = _cpus()
    if kind != "local":
        raise ValueError(f"executor must be 'local' or 'ray', got {kind!r}")
    return InlineExecutor() if workers == 0 else LocalExecutor(workers, threads)
