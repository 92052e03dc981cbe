"""The user's own data: CSV files (columns chosen by name) and NPZ archives (arrays chosen by
key). Every problem is reported as an error naming the file and, where it applies, the line,
column or array."""

from __future__ import annotations

import csv
import math
import zipfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .splits import Splits, random_split_indices

__all__ = ["load_csv", "load_npz"]

_MAX_AUTO_CLASSES = 20
_F32_MAX = float(np.finfo(np.float32).max)  # data becomes float32 tensors: larger is inf
_SAMPLE = 1 << 20  # bytes read first, to check the file is text and estimate its rows
_MAX_LINE = 1 << 26  # a row longer than 64 MB is not a row of a table
#: bytes a loaded value costs: float64 while parsing, float32 tensor, a standardized copy
_BYTES_PER_VALUE = 16
_BYTES_PER_ROW = 120  # the row's label as a Python string, and its share of the splits' indices


def _as_path(path: object) -> Path:
    if not isinstance(path, str | Path):
        raise TypeError(f"path must be a str or Path, got {path!r}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    return p


def _resolve_task(task: str, y: np.ndarray, where: str) -> str:
    if task not in ("auto", "classification", "regression"):
        raise ValueError(f"task must be 'auto', 'classification' or 'regression', got {task!r}")
    numeric = y.dtype.kind in "biuf"
    if task == "regression" and not numeric:
        raise ValueError(f"{where}: task='regression' needs a numeric target, found text labels")
    if task != "auto":
        return task
    if not numeric:
        return "classification"
    if y.ndim == 1 and np.all(np.mod(y, 1) == 0):
        n_distinct = len(np.unique(y))
        if n_distinct <= _MAX_AUTO_CLASSES and n_distinct <= len(y) / 2:
            return "classification"
    return "regression"


def _finish(
    x: np.ndarray,
    y: np.ndarray,
    *,
    task: str,
    where: str,
    name: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    feature_names: tuple[str, ...] | None = None,
) -> Splits:
    task = _resolve_task(task, y, where)
    class_names: tuple[str, ...] | None = None
    if task == "classification":
        if y.ndim != 1:
            raise ValueError(f"{where}: a classification target must be 1-D, got shape {y.shape}")
        classes, codes = np.unique(y, return_inverse=True)
        y_t = torch.as_tensor(codes.reshape(-1), dtype=torch.int64)
        class_names = tuple(str(c) for c in classes.tolist())
        num_classes: int | None = len(classes)
    else:
        _check_float32(y, where, "the target", rows=None)
        y_t = torch.as_tensor(y.reshape(len(y), -1), dtype=torch.float32)
        num_classes = None
    x_t = torch.as_tensor(x, dtype=torch.float32)
    tr, va, te = random_split_indices(len(x_t), (val_fraction, test_fraction), seed, where)
    return Splits(
        x_t[tr], y_t[tr], x_t[va], y_t[va], x_t[te], y_t[te],
        task=task, num_classes=num_classes, name=name,  # type: ignore[arg-type]
        feature_names=feature_names, class_names=class_names,
    )  # fmt: skip


def _text_lines(p: Path, fh: BinaryIO) -> Iterator[str]:
    """The file's lines decoded as UTF-8, one at a time, so a byte that is not UTF-8 is an
    error naming its line, and a line longer than any row (a file of NUL bytes, a binary file)
    is refused before it is held in memory."""
    i = 0
    while raw := fh.readline(_MAX_LINE + 1):
        i += 1
        if len(raw) > _MAX_LINE and not raw.endswith(b"\n"):
            raise ValueError(f"{p}, line {i}: longer than {_MAX_LINE >> 20} MB, so not a row of a CSV table")
        try:
            yield raw.decode("utf-8-sig" if i == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}, line {i}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                             "save the file as UTF-8") from None


def _head(p: Path) -> bytes:
    """The file's first megabyte, refused when it is not text (a NUL byte: a binary file, or
    a file with holes, as `truncate -s` makes)."""
    with p.open("rb") as fh:
        head = fh.read(_SAMPLE)
    nul = head.find(0)
    if nul >= 0:
        raise ValueError(f"{p}: not a text CSV file (a NUL byte at byte {nul})")
    return head


def _check_fits(p: Path, columns: int) -> None:
    """Refuse (naming the file, its size and the memory it needs) a CSV file whose values
    cannot fit in the free memory — estimated from the rows in its first megabyte, before it
    is read (`thalweg.budget`, the cap every command applies)."""
    from thalweg.budget import memory_problem, size

    total = p.stat().st_size
    head = _head(p)
    rows = max(1, head.count(b"\n"))
    need = total / (len(head) / rows) * (columns * _BYTES_PER_VALUE + _BYTES_PER_ROW)
    if (why := memory_problem(need, what=f"reading {p.name} ({size(total)})")) is not None:
        raise ValueError(f"{p}: {why}; use a smaller file (a sample of its rows)")


def load_csv(
    *,
    path: str | Path,
    target: str | None = None,
    features: list[str] | tuple[str, ...] | None = None,
    task: str = "auto",
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    delimiter: str = ",",
) -> Splits:
    """A CSV file with a header row: ``target`` (default: the last column) is the label,
    ``features`` (default: every other column) the inputs. ``task="auto"`` picks
    classification for text labels or ≤ 20 distinct integer values, else regression.
    A file too large for the free memory is refused before it is read."""
    p = _as_path(path)
    _head(p)
    with p.open("rb") as fh:
        reader = csv.reader(_text_lines(p, fh), delimiter=delimiter)
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise ValueError(f"{p}: empty file, expected a header row of column names")
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise ValueError(f"{p}: duplicate column name(s) {dupes}")
        target = header[-1] if target is None else target
        features = [h for h in header if h != target] if features is None else list(features)
        if not features:
            raise ValueError(f"{p}: no feature columns (features={features!r})")
        missing = [c for c in [*features, target] if c not in header]
        if missing:
            raise ValueError(f"{p}: column(s) {missing} not found; the columns are {header}")
        if target in features:
            raise ValueError(f"{p}: column {target!r} is both the target and a feature")
        _check_fits(p, len(features))
        f_idx = [header.index(c) for c in features]
        t_idx = header.index(target)
        values = array("d")  # 8 bytes a value (a list of Python floats would take 32)
        rows_y: list[str] = []
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{p}, line {line}: expected {len(header)} fields, got {len(row)}")
            values.extend(_number(row[j], p, line, header[j]) for j in f_idx)
            rows_y.append(row[t_idx].strip())
    if not rows_y:
        raise ValueError(f"{p}: no data rows after the header")
    y = _target_array(rows_y, p, target, task)
    return _finish(
        np.frombuffer(values, dtype=np.float64).reshape(len(rows_y), len(f_idx)), y, task=task, where=str(p),
        name=p.stem, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
        feature_names=tuple(features),
    )  # fmt: skip


def _number(cell: str, p: Path, line: int, column: str) -> float:
    s = cell.strip()
    if not s:
        raise ValueError(f"{p}, line {line}, column {column!r}: missing value")
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"{p}, line {line}, column {column!r}: non-numeric value {s!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{p}, line {line}, column {column!r}: non-finite value {s!r}")
    if abs(v) > _F32_MAX:
        raise ValueError(f"{p}, line {line}, column {column!r}: value {s!r} overflows float32 "
                         f"(largest {_F32_MAX:.4g}), the precision thalweg trains in; rescale it")
    return v


def _check_float32(a: np.ndarray, where: str, what: str, rows: list[int] | None) -> None:
    """A value beyond float32's range would become inf (and standardization NaN): name it."""
    if a.dtype.kind != "f" or not a.size:
        return
    big = np.abs(a) > _F32_MAX
    if not big.any():
        return
    idx = np.unravel_index(int(np.flatnonzero(big)[0]), a.shape)
    row = int(idx[0])
    at = f"line {rows[row]}" if rows is not None else f"row {row}"
    if len(idx) > 1:
        at += ", column " + ",".join(str(int(i)) for i in idx[1:])
    raise ValueError(f"{where}: {what} at {at} is {float(a[idx]):.4g}, which overflows float32 "
                     f"(largest {_F32_MAX:.4g}), the precision thalweg trains in; rescale it")


def _target_array(cells: list[str], p: Path, target: str, task: str) -> np.ndarray:
    for i, c in enumerate(cells):
        if not c:
            raise ValueError(f"{p}, data row {i + 1}, column {target!r}: missing value")
    try:
        y = np.asarray([float(c) for c in cells])
    except ValueError:
        if task == "regression":
            bad = next(c for c in cells if not _is_float(c))
            raise ValueError(
                f"{p}, column {target!r}: non-numeric target {bad!r} for task='regression'"
            ) from None
        return np.asarray(cells)
    if not np.all(np.isfinite(y)):
        i = int(np.flatnonzero(~np.isfinite(y))[0])
        raise ValueError(f"{p}, data row {i + 1}, column {target!r}: non-finite value {cells[i]!r}")
    if task != "classification" and np.any(np.abs(y) > _F32_MAX):
        i = int(np.flatnonzero(np.abs(y) > _F32_MAX)[0])
        raise ValueError(f"{p}, data row {i + 1}, column {target!r}: value {cells[i]!r} overflows "
                         f"float32 (largest {_F32_MAX:.4g}), the precision thalweg trains in; rescale it")
    return y


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _check_array(a: np.ndarray, p: Path, key: str) -> None:
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{p}: array {key!r} must be numeric, got dtype {a.dtype}")
    if a.ndim == 0 or a.shape[0] == 0:
        raise ValueError(f"{p}: array {key!r} is empty (shape {a.shape})")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        idx = np.unravel_index(int(np.flatnonzero(~np.isfinite(a))[0]), a.shape)
        raise ValueError(f"{p}: array {key!r} has a non-finite value at index {tuple(map(int, idx))}")


def load_npz(
    *,
    path: str | Path,
    features: str = "x",
    target: str = "y",
    task: str = "auto",
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> Splits:
    """An ``.npz`` archive: inputs in array ``features`` (shape (N, …)) and labels/targets in
    array ``target`` (shape (N,) or (N, k)), split with a seeded permutation."""
    p = _as_path(path)
    with p.open("rb") as fh:
        magic = fh.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # an .npz is a zip archive
        raise ValueError(f"{p}: not an .npz archive (a zip of .npy arrays, as numpy.savez writes)")
    try:
        with np.load(p, allow_pickle=False) as f:
            keys = list(f.keys())
            missing = [k for k in (features, target) if k not in keys]
            if missing:
                raise ValueError(f"{p}: array(s) {missing} not found; the arrays are {keys}")
            x, y = f[features], f[target]
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{p}: not a readable .npz archive ({e})") from None
    except ValueError as e:
        if str(p) in str(e):
            raise
        raise ValueError(f"{p}: not a valid array file: an array holds Python objects or is "
                         "damaged; thalweg reads numeric arrays only") from None
    _check_array(x, p, features)
    _check_array(y, p, target)
    _check_float32(x, str(p), f"array {features!r}", rows=None)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{p}: {features!r} has {x.shape[0]} rows but {target!r} has {y.shape[0]}"
        )
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim > 2:
        raise ValueError(f"{p}: array {target!r} must have shape (N,) or (N, k), got {y.shape}")
    return _finish(
        x, y, task=task, where=str(p), name=p.stem, seed=seed,
        val_fraction=val_fraction, test_fraction=test_fraction,
    )  # fmt: skip
