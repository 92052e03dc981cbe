"""Where the numbers go besides metrics.jsonl: TensorBoard event files (torch's SummaryWriter)
and MLflow, both optional. One `Board` fans out to whichever is on; `thalweg train`, the
Lightning and Hugging Face callbacks and `thalweg.watch` all log through it, so a tag means the
same thing everywhere.

Tags: every number of a metrics record under its metrics.jsonl key (`train_loss`, `val_loss`,
`val_accuracy`, `lr`, `grad_norm`, …); per layer `grad_norm/<layer>`, `update_ratio/<layer>`,
`weight_norm/<layer>` and per activation `dead_fraction/<name>`, `saturation/<name>`,
`activation_rms/<name>` from the monitors; `curvature/lambda_max` (and `curvature/lambda_2`, …
with `curvature_k`) with its residual, from the curvature probe;
`nonfinite_steps` (cumulative); and each figure as an image `figures/<name>`. MLflow gets the
same numbers with `/` written as `.` (`grad_norm.net.0`), the figures, report.html and
findings.json as artifacts.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Board", "curvature_scalars", "layer_scalars", "mlflow_available", "resolve_tensorboard", "tensorboard_available"]

_SKIP = ("step", "epoch", "event", "seconds")


def tensorboard_available() -> bool:
    """True when the `tensorboard` package (what torch's SummaryWriter writes with) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def mlflow_available() -> bool:
    """True when the `mlflow` package is installed."""
    return importlib.util.find_spec("mlflow") is not None


def resolve_tensorboard(setting: bool | str, *, where: str = "tensorboard") -> bool:
    """"auto" → on when tensorboard is installed; True when it is not → one clear error."""
    if setting == "auto":
        return tensorboard_available()
    if setting is True and not tensorboard_available():
        raise ValueError(f"{where} = true but the tensorboard package is not installed: "
                         "pip install 'thalweg[tensorboard]' (or set it to false)")
    return bool(setting)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def layer_scalars(m: Mapping[str, Any]) -> dict[str, float]:
    """The per-layer and per-activation numbers of one `Monitor.measure()` record, as tags."""
    out: dict[str, float] = {}
    for L in m.get("layers", []):
        for key in ("grad_norm", "update_ratio", "weight_norm"):
            v = _number(L.get(key))
            if v is not None:
                out[f"{key}/{L['name']}"] = v
    for a in m.get("activations", []):
        for key in ("dead_fraction", "saturation", "rms"):
            v = _number(a.get(key))
            if v is not None:
                out[f"{'activation_rms' if key == 'rms' else key}/{a['name']}"] = v
    return out


def curvature_scalars(eigenvalues: list[float], residuals: list[float] | None = None) -> dict[str, float]:
    """The curvature probe's tags: `curvature/lambda_max` (its residual `…_residual`), then
    `curvature/lambda_2`, … for the next largest."""
    out: dict[str, float] = {}
    for i, v in enumerate(eigenvalues):
        name = "curvature/lambda_max" if i == 0 else f"curvature/lambda_{i + 1}"
        out[name] = v
        if residuals is not None and i < len(residuals):
            out[f"{name}_residual"] = residuals[i]
    return out


#: metrics.jsonl keys that get a grouped TensorBoard tag
_TAGS = {"lambda_max": "curvature/lambda_max", "lambda_max_residual": "curvature/lambda_max_residual"}


class Board:
    """TensorBoard and/or MLflow for one run; a no-op when neither is on.

    `log_dir` receives the event files. `purge_step` (a resumed or rolled-back run) drops the
    events at and after that step, so TensorBoard shows one history, not two overlapping ones.
    `mlflow` is a tracking URI ("sqlite:///mlflow.db", "http://host:5000", …), or None; the
    metrics go to a new run of experiment "thalweg", or into the caller's active run if any.
    """

    def __init__(self, log_dir: str | Path | None, *, tensorboard: bool | str = "auto",
                 mlflow: str | None = None, run_name: str = "thalweg", purge_step: int | None = None,
                 params: Mapping[str, Any] | None = None) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.writer: Any = None
        self.mlflow: Any = None
        self._mlflow_run = False
        if self.log_dir is not None and resolve_tensorboard(tensorboard):
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        if mlflow:
            if not mlflow_available():
                raise ValueError(f"mlflow = {mlflow!r} but the mlflow package is not installed: "
                                 "pip install 'thalweg[mlflow]' (or leave mlflow unset)")
            import mlflow as _mlflow

            if _mlflow.active_run() is None:  # else: log into the run the caller has open
                _mlflow.set_tracking_uri(mlflow)
                _mlflow.set_experiment("thalweg")
                _mlflow.start_run(run_name=run_name)
                self._mlflow_run = True
            self.mlflow = _mlflow
            if params:
                _mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    @property
    def enabled(self) -> bool:
        return self.writer is not None or self.mlflow is not None

    def restart(self, purge_step: int) -> None:
        """Reopen the event files after a rollback: events at and after `purge_step` are dropped."""
        if self.writer is None:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer.close()
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, Any], step: int) -> None:
        """Every finite number in `values` (a metrics record or a tag → value dict)."""
        nums = {_TAGS.get(k, k): v for k, v in ((k, _number(v)) for k, v in values.items() if k not in _SKIP)
                if v is not None}
        if not nums:
            return
        if self.writer is not None:
            for k, v in nums.items():
                self.writer.add_scalar(k, v, step)
        if self.mlflow is not None:
            self.mlflow.log_metrics({_mlflow_key(k): v for k, v in nums.items()}, step=step)

    def monitors(self, record: Mapping[str, Any], step: int) -> None:
        """Per-layer gradient norms, update ratios, weight norms and activation health."""
        self.scalars(layer_scalars(record), step)

    def figures(self, paths: Iterable[Path], step: int) -> None:
        """Each PNG as an image (TensorBoard) and an artifact (MLflow)."""
        for p in paths:
            if not Path(p).is_file():
                continue
            if self.writer is not None:
                import matplotlib.image as mpimg

                img = mpimg.imread(str(p))
                self.writer.add_image(f"figures/{Path(p).stem}", img[..., :3], step, dataformats="HWC")
            if self.mlflow is not None:
                self.mlflow.log_artifact(str(p), artifact_path="figures")

    def artifact(self, path: Path) -> None:
        """A file (report.html, findings.json) into the MLflow run."""
        if self.mlflow is not None and Path(path).is_file():
            self.mlflow.log_artifact(str(path))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Write everything out and end the MLflow run; safe to call twice."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._mlflow_run:
            self.mlflow.end_run()
            self._mlflow_run = False
        self.mlflow = None


def _mlflow_key(k: str) -> str:
    """An MLflow metric name: `grad_norm/net.0` → `grad_norm.net.0` (a file store cannot hold
    both `grad_norm` and `grad_norm/…`); characters MLflow refuses become `_`."""
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", k.replace("/", "."))
