"""The one way a bench finds its workloads — and the only place it may run a user's code.

A bench file's `workloads` (and `--workload`) name **registered** workloads
(``"quadratic(condition_number=1000.0)"``) or **`thalweg train` configs** (``"my.toml"``:
data, model and loss; the bench brings optimizer and schedule). Neither imports nor calls
anything: ``"os:system(command='touch x')"`` is refused, not run. A workload defined in
Python is named in `code` (``--code``) — ``"my_bench.py:workload"`` (a file) or
``"mypkg.bench:workload"`` (a module found from the bench file's folder or the current
one, no PYTHONPATH needed) — and **that code runs**: it is imported and called, in this
process and in every worker, exactly as the user named it.

Inside a bench, a workload travels to worker processes as a canonical ref
(:func:`canonical`): a registered key, ``toml:/abs/path.toml``, or ``code:...`` with the
folders to import from; :func:`from_ref` turns it back into the workload.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from thalweg.bench.tasks import workloads
from thalweg.bench.tasks.workloads import Workload, WorkloadError, parse_key, workload_key

__all__ = ["canonical", "from_ref", "load", "load_code", "toml_workload"]

CODE_HINT = ("a workload of your own in Python goes under `code = [\"my_bench.py:factory\"]` in the bench "
             "file (or `--code my_bench.py:factory`): the bench then imports and runs that code")  # fmt: skip


def load(ref: str, base: Path | None = None) -> Workload:
    """A registered workload or a `thalweg train` config (a path ending in .toml, relative to
    `base` or the current folder). Never imports or calls anything a name points to."""
    text = ref.strip()
    if text.lower().endswith(".toml"):
        return toml_workload(_path(text, base))
    name, _ = parse_key(text)
    if ":" in name or "/" in name:
        raise WorkloadError(f"workload {ref!r} is neither registered nor a .toml config; {CODE_HINT}")
    return workloads.get(text)


def _path(text: str, base: Path | None) -> Path:
    p = Path(text).expanduser()
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    if not p.is_file():
        raise WorkloadError(f"workload {text!r}: no such file {p}")
    return p.resolve()


def toml_workload(path: Path) -> Workload:
    """A `thalweg train` config as a workload: its data, model, loss, batch size and training
    length (epochs × steps per epoch); its best metric (`train.best_metric`) is the target's;
    evaluated every `train.eval_every` steps (else once per epoch). Key: the file's name."""
    from thalweg.bench.tasks.configs import config_workload
    from thalweg.train import ConfigError
    from thalweg.train.components import prepare_data
    from thalweg.train.config import load_config

    try:
        cfg = load_config(path)
        splits = prepare_data(cfg)[0]
    except (ConfigError, OSError, ValueError) as e:
        raise WorkloadError(f"workload {path.name!r}: {e}") from None
    classify = splits.task == "classification"
    metric = cfg.train.best_metric if cfg.train.best_metric != "auto" else (
        "val_accuracy" if classify else "val_loss")  # fmt: skip
    spe = max(1, math.ceil(len(splits.x_train) / cfg.train.batch_size))
    try:
        w = config_workload(path.name, cfg, metric=metric, mode="max" if metric == "val_accuracy" else "min",
                            step_budget=cfg.train.epochs * spe, max_seconds=3600.0,
                            eval_every=cfg.train.eval_every or spe,
                            description=f"`thalweg train` config {path.name} ({cfg.model.name} on {cfg.data.name})")  # fmt: skip
    except ValueError as e:
        raise WorkloadError(f"workload {path.name!r}: {e}") from None
    return replace(w, ref=f"toml:{path}")


def _import(target: str, folders: Sequence[str]) -> Any:
    """The object `file.py:attr` or `module:attr` names (the user's own code, imported)."""
    where, _, attr = target.rpartition(":")
    if not where or not attr:
        raise WorkloadError(f"code {target!r}: expected FILE.py:factory or module:factory")
    for folder in folders:
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        if where.endswith(".py"):
            path = Path(where)
            name = f"thalweg_bench_code_{path.stem}_{abs(hash(str(path))) % 10**8}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot load {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        return getattr(module, attr)
    except (ImportError, AttributeError, OSError, SyntaxError) as e:
        raise WorkloadError(f"code {target!r}: cannot import it ({type(e).__name__}: {e})") from None


def load_code(ref: str, base: Path | None = None) -> Workload:
    """A workload of the user's own code, which is imported and called: ``FILE.py:attr`` or
    ``module:attr``, optionally with literal parameters ``attr(k=v)``; `attr` is a
    :class:`Workload` or a factory returning one. Only for refs the user named as code."""
    text = ref.strip()
    head, params = parse_key(text)
    where, _, attr = head.rpartition(":")
    base = base or Path.cwd()
    folders = [str(base.resolve()), str(Path.cwd().resolve())]
    if where.endswith(".py"):
        where = str(_path(where, base))
        folders.insert(0, str(Path(where).parent))
    return _build(f"{where}:{attr}", params, list(dict.fromkeys(folders)))


def _build(target: str, params: dict[str, Any], folders: list[str]) -> Workload:
    obj = _import(target, folders)
    if isinstance(obj, Workload):
        if params:
            raise WorkloadError(f"code {target!r} is a Workload: it takes no parameters")
        w = obj
    elif callable(obj):
        try:
            w = obj(**params)
        except (TypeError, ValueError) as e:
            raise WorkloadError(f"code {target!r}: {e}") from None
        if not isinstance(w, Workload):
            raise WorkloadError(f"code {target!r} returned {type(w).__name__}, not a thalweg.bench Workload")
    else:
        raise WorkloadError(f"code {target!r} is neither a Workload nor a factory")
    given = dict(sorted(params.items()))
    ref = "code:" + "|".join(folders) + "|" + workload_key(target, given)
    return replace(w, ref=ref, params={**dict(w.params), **given})


def canonical(w: Workload) -> str:
    """The ref a worker resolves back into `w` (:func:`from_ref`)."""
    return w.ref or w.key


def from_ref(ref: str) -> Workload:
    """The workload of a canonical ref (in a worker process: the parent checked it)."""
    if ref.startswith("toml:"):
        return toml_workload(Path(ref[5:]))
    if ref.startswith("code:"):
        *folders, head = ref[5:].split("|")
        target, params = parse_key(head)
        return _build(target, params, folders)
    return workloads.get(ref)
