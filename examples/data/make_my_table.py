"""Write examples/data/my_table.csv: a small regression table (the example of docs/data.md).

House-like rows: floor area (m²), rooms, age (years), distance to the centre (km) and the price
they determine (in units of 100 k€, so the target is of order one: the loss is its mean squared
error and is not rescaled), with noise. The inputs' scales differ by orders of magnitude on
purpose, which `[data] standardize = true` takes care of. Deterministic: `python examples/data/make_my_table.py`
rewrites the same file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def main(path: Path = Path(__file__).with_name("my_table.csv"), rows: int = 400) -> Path:
    rng = np.random.default_rng(0)
    area = rng.uniform(30, 220, rows)
    rooms = np.clip(np.round(area / 30 + rng.normal(0, 0.7, rows)), 1, 9)
    age = rng.uniform(0, 90, rows)
    distance = rng.gamma(2.0, 3.0, rows)
    price = (2.4 * area + 12 * rooms - 0.9 * age - 35 * np.log1p(distance) + rng.normal(0, 15, rows) + 80) / 100
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["area_m2", "rooms", "age_years", "distance_km", "price_100k_eur"])
        for r in zip(area, rooms, age, distance, price, strict=True):
            w.writerow([f"{r[0]:.1f}", int(r[1]), f"{r[2]:.0f}", f"{r[3]:.2f}", f"{r[4]:.3f}"])
    return path


if __name__ == "__main__":
    print(f"wrote {main()}")
