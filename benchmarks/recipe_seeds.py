"""The MNIST-1D recipes (examples/mnist1d_mlp.toml, examples/mnist1d_cnn.toml) trained by
`thalweg train` with seeds 0, 1, 2: test accuracy of the best weights, mean ± sd.

    .venv/bin/python benchmarks/recipe_seeds.py [--seeds 3] [--json PATH]

The paper (Greydanus 2020) reports 68 % for its MLP and 94 % for its CNN on this protocol.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"mlp": ("examples/mnist1d_mlp.toml", "MLP 2 × 366, dropout, AdamW", 68),
           "cnn": ("examples/mnist1d_cnn.toml", "CNN 3 × 55 channels, batch norm, AdamW", 94)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the table and figures here (thalweg.record)")
    args = ap.parse_args()
    from thalweg.record import Record
    from thalweg.train import fit, load_config

    rec, rows = Record(), []
    with tempfile.TemporaryDirectory() as tmp:
        for key, (path, what, paper) in RECIPES.items():
            accs = []
            for s in range(args.seeds):
                t0 = time.perf_counter()
                cfg = load_config(ROOT / path, {"train.seed": s, "name": f"{key}-seed{s}", "out_dir": tmp})
                acc = 100 * fit(cfg, quiet=True).test_accuracy
                accs.append(acc)
                rec.figure(f"{key}.seed{s}", acc)
                print(f"{path} seed {s}: test accuracy {acc:.1f} % ({time.perf_counter() - t0:.0f} s)", flush=True)
            mean, sd = statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
            rec.figure(f"{key}.mean", mean)
            rec.figure(f"{key}.sd", sd)
            rows.append([f"`{path}` ({what})", f"{mean:.1f} % ± {sd:.1f}", ", ".join(f"{a:.1f}" for a in accs),
                         f"{paper} %"])
    rec.table("recipes", ["recipe", f"test accuracy, mean ± sd over {args.seeds} seeds", "per seed (%)", "the paper"],
              rows, "lrrr")
    if args.json:
        print(f"wrote {rec.write(args.json)}")


if __name__ == "__main__":
    main()
