"""Regenerate the two shipped data files of the sick-run zoo (deterministic, numpy only).

    python examples/sick/make_data.py

- ``data/unscaled.csv``: 4 Gaussian classes in 8 dimensions, each feature then measured in
  its own unit (scales 1e-2 … 1e5, offsets): learnable once standardized, not before.
- ``data/imbalanced.csv``: 3 classes in 6 dimensions with 96 % / 3 % / 1 % of the rows.
- ``data/noisy.csv``: 4 Gaussian classes in 8 dimensions, 45 % of the labels replaced by a random
  class (of 4: about a third of all labels end up wrong).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent / "data"


def _blobs(rng: np.random.Generator, counts: list[int], dim: int, sep: float) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(len(counts), dim))
    centres *= sep / np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.concatenate([rng.normal(size=(n, dim)) + centres[c] for c, n in enumerate(counts)])
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


def _write(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    header = ",".join([*(f"f{j}" for j in range(x.shape[1])), "label"])
    rows = [",".join([*(f"{v:.6g}" for v in r), str(int(c))]) for r, c in zip(x, y, strict=True)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(16)
    x, y = _blobs(rng, [300] * 4, 8, sep=3.0)
    scales = 10.0 ** np.linspace(-2, 5, x.shape[1])
    offsets = 10.0 ** np.linspace(-1, 5, x.shape[1]) * rng.choice([-1, 1], x.shape[1])
    _write(HERE / "unscaled.csv", x * scales + offsets, y)
    x, y = _blobs(rng, [1152, 36, 12], 6, sep=1.0)
    _write(HERE / "imbalanced.csv", x, y)
    x, y = _blobs(rng, [400] * 4, 8, sep=3.0)
    flip = rng.random(len(y)) < 0.45
    y[flip] = rng.integers(0, 4, int(flip.sum()))
    _write(HERE / "noisy.csv", x, y)


if __name__ == "__main__":
    main()
