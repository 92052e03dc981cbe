"""The seeds' worked examples, run with thalweg.

1. Linear regression by gradient descent on X = [1, 2, 3, 4, 5], Y = [2, 3, 5, 7, 11]
   (θ₀ = θ₁ = 0, α = 0.01, 1000 iterations; seed 004): the hand-written update and
   `thalweg.optim.SGD` give the same θ. Also seed 004's Dense(1) + Adam, 1000 epochs, and
   seed 000's minibatch SGD on synthetic linear regression (lr 0.03, batch 10, 3 epochs).
2. Every optimizer in the registry minimizing Rosenbrock from (−1.5, 2), as a table.

    python examples/seeds.py [--json PATH]     # --json: also the tables and figures (thalweg.record)
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import thalweg.optim as to
from thalweg.landscape.trajectories import trajectories
from thalweg.optim import registry

X = [1.0, 2.0, 3.0, 4.0, 5.0]
Y = [2.0, 3.0, 5.0, 7.0, 11.0]

#: hyperparameters for Rosenbrock from (−1.5, 2): each chosen from a small sweep
#: (see the README); steps are the budget.
ROSENBROCK_RUNS: list[tuple[str, str, dict, int]] = [
    ("gradient descent", "sgd", {"lr": 1e-3}, 3000),
    ("Polyak momentum", "sgd", {"lr": 3e-4, "momentum": 0.9}, 3000),
    ("Nesterov momentum", "sgd", {"lr": 3e-4, "momentum": 0.9, "nesterov": True}, 3000),
    ("AdaGrad", "adagrad", {"lr": 1.0}, 3000),
    ("RMSProp", "rmsprop", {"lr": 3e-3}, 3000),
    ("AdaDelta", "adadelta", {"lr": 1.0}, 3000),
    ("Adam", "adam", {"lr": 0.03}, 3000),
    ("AdamW", "adamw", {"lr": 0.03, "weight_decay": 0.0}, 3000),
    ("Newton (damped)", "newton", {}, 50),
    ("Newton (saddle-free)", "newton", {"mode": "saddle_free"}, 50),
    ("L-BFGS (strong Wolfe)", "lbfgs", {}, 50),
    ("AdaHessian", "adahessian", {"lr": 0.3}, 3000),
    # the matrix rules on a 2-vector: a vector is not preconditioned (see docs/contenders.md)
    ("Adafactor (ρ_t = min(0.1, 1/√t))", "adafactor", {"lr": 0.1}, 3000),
    ("Muon (a vector: AdamW)", "muon", {"lr": 0.03}, 3000),
    ("Muon (split=all: 1×2 row)", "muon", {"lr": 0.003, "split": "all"}, 3000),
    ("Shampoo (a vector: Adam graft)", "shampoo", {"lr": 0.03}, 3000),
    ("SOAP (a vector: Adam)", "soap", {"lr": 0.03, "weight_decay": 0.0}, 3000),
    # the elementwise and per-tensor contenders (docs/contenders.md)
    ("NAdam", "nadam", {"lr": 0.03}, 3000),
    ("RAdam", "radam", {"lr": 0.01}, 3000),
    ("Adamax", "adamax", {"lr": 0.03}, 3000),
    ("Lion", "lion", {"lr": 0.003}, 3000),
    ("Schedule-Free AdamW (x)", "schedulefree_adamw", {"lr": 0.1}, 3000),
    ("Schedule-Free SGD (x)", "schedulefree_sgd", {"lr": 0.002}, 3000),
    ("Prodigy (lr-free)", "prodigy", {}, 3000),
    ("LAMB", "lamb", {"lr": 0.01}, 3000),
    ("LARS (a vector: momentum SGD)", "lars", {"lr": 0.0003}, 3000),
]


def linear_regression_by_hand(alpha: float = 0.01, iterations: int = 1000) -> tuple[float, float]:
    """Seed 004's loop, verbatim in spirit: gradients of the mean squared error."""
    x, y = np.array(X), np.array(Y)
    n = len(x)
    t0 = t1 = 0.0
    for _ in range(iterations):
        pred = t0 + t1 * x
        d0 = (-2 / n) * np.sum(y - pred)
        d1 = (-2 / n) * np.sum(x * (y - pred))
        t0 -= alpha * d0
        t1 -= alpha * d1
    return t0, t1


def linear_regression_with(opt_name: str, iterations: int = 1000, **hp: float) -> tuple[float, float]:
    """The same problem through a thalweg optimizer (float64, full batch)."""
    x, y = torch.tensor(X, dtype=torch.float64), torch.tensor(Y, dtype=torch.float64)
    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = registry.create(opt_name, [theta], **hp)
    for _ in range(iterations):
        opt.zero_grad()
        loss = ((y - (theta[0] + theta[1] * x)) ** 2).mean()
        loss.backward()
        opt.step()
    return float(theta[0].detach()), float(theta[1].detach())


def minibatch_sgd(lr: float = 0.03, batch_size: int = 10, epochs: int = 3, seed: int = 0) -> tuple[list[float], float, float]:
    """Seed 000's d2l loop: y = Xw + b + noise with w = (2, −3.4), b = 4.2; squared loss / 2."""
    g = torch.Generator().manual_seed(seed)
    w_true, b_true = torch.tensor([2.0, -3.4]), 4.2
    features = torch.randn(1000, 2, generator=g)
    labels = features @ w_true + b_true + 0.01 * torch.randn(1000, generator=g)
    w = torch.nn.Parameter(0.01 * torch.randn(2, generator=g))
    b = torch.nn.Parameter(torch.zeros(()))
    opt = to.SGD([w, b], lr=lr)
    for _ in range(epochs):
        order = torch.randperm(1000, generator=g)
        for i in range(0, 1000, batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            loss = ((features[idx] @ w + b - labels[idx]) ** 2 / 2).mean()
            loss.backward()
            opt.step()
    with torch.no_grad():
        final = float(((features @ w + b - labels) ** 2 / 2).mean())
    return w.detach().tolist(), float(b.detach()), final


ROSENBROCK_COLUMNS = ("method", "optimizer (hyperparameters)", "final f", "‖x − (1,1)‖", "steps to ‖x − (1,1)‖ < 1e-3", "budget",
                      "seconds")


def rosenbrock_rows() -> list[list[str]]:
    """One row per ROSENBROCK_RUNS entry, the cells of ROSENBROCK_COLUMNS."""
    rows = []
    for label, name, hp, steps in ROSENBROCK_RUNS:
        t0 = time.perf_counter()
        tr = trajectories("rosenbrock", [(name, hp)], start=(-1.5, 2.0), steps=steps)[0]
        dist = np.linalg.norm(tr.points - np.array([1.0, 1.0]), axis=1)
        hit = int(np.argmax(dist < 1e-3)) if (dist < 1e-3).any() else None
        final_f = float(tr.losses[-1])
        rows.append([
            label, tr.label, "diverged" if tr.diverged else f"{final_f:.3g}",
            f"{dist[-1]:.3g}" if math.isfinite(dist[-1]) else "inf",
            "—" if hit is None else str(hit), str(steps), f"{time.perf_counter() - t0:.2f}",
        ])
    return rows


def rosenbrock_table(rows: list[list[str]] | None = None) -> Table:
    table = Table(title="Rosenbrock from (−1.5, 2): minimum f = 0 at (1, 1)")
    for col in ROSENBROCK_COLUMNS:
        table.add_column(col, justify="left" if col.startswith(("method", "optimizer")) else "right")
    for row in rows if rows is not None else rosenbrock_rows():
        table.add_row(*row)
    skipped = [i.name for i in registry.infos() if i.needs_model]
    if skipped:
        table.caption = (f"not shown: {', '.join(skipped)} (curvature of Linear/Conv layers; "
                         "needs a network, not a 2-D point). L-BFGS and Newton steps are outer iterations.")
    return table


def main() -> None:
    import argparse

    from thalweg.record import Record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the tables and figures here (thalweg.record)")
    args = ap.parse_args()
    rec = Record()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    console = Console(width=150)
    hand = linear_regression_by_hand()
    ours = linear_regression_with("sgd", lr=0.01)
    lsq = np.polyfit(X, Y, 1)[::-1]
    lin = Table(title="Linear regression on X = [1..5], Y = [2, 3, 5, 7, 11]  (θ₀ = θ₁ = 0, α = 0.01, 1000 iterations)")
    for col in ("method", "θ₀", "θ₁"):
        lin.add_column(col, justify="left" if col == "method" else "right")
    lin.add_row("hand-written gradient descent (seed 004)", f"{hand[0]:.6f}", f"{hand[1]:.6f}")
    lin.add_row("thalweg.optim.SGD(lr=0.01)", f"{ours[0]:.6f}", f"{ours[1]:.6f}")
    adam = linear_regression_with("adam", lr=1e-3)
    lin.add_row("thalweg.optim.Adam(lr=1e-3), 1000 epochs (seed 004's Keras Dense(1))", f"{adam[0]:.6f}", f"{adam[1]:.6f}")
    lin.add_row("least squares (closed form)", f"{lsq[0]:.6f}", f"{lsq[1]:.6f}")
    console.print(lin)
    agree = max(abs(a - b) for a, b in zip(hand, ours, strict=True))
    console.print(f"hand-written vs thalweg SGD: max |Δθ| = {agree:.2e}\n")

    w, b, final = minibatch_sgd()
    console.print(f"minibatch SGD (seed 000: lr 0.03, batch 10, 3 epochs) on y = 2x₁ − 3.4x₂ + 4.2: "
                  f"w = ({w[0]:.4f}, {w[1]:.4f}), b = {b:.4f}, loss = {final:.2e}\n")
    rows = rosenbrock_rows()
    console.print(rosenbrock_table(rows))
    if args.json:
        for k, v in {"linreg.theta0": ours[0], "linreg.theta1": ours[1], "linreg.agreement": agree,
                     "minibatch.w0": w[0], "minibatch.w1": w[1], "minibatch.b": b, "minibatch.loss": final}.items():
            rec.figure(k, v)
        for row in rows:  # keyed by the method, lower case, words joined by _ ("newton_damped")
            key = re.sub(r"\W+", "_", row[0].split(" (ρ")[0]).strip("_").lower()
            rec.figure(f"rosenbrock.{key}.steps", row[4])
            rec.figure(f"rosenbrock.{key}.final_f", row[2])
        rec.table("rosenbrock", list(ROSENBROCK_COLUMNS[:-1]), [r[:-1] for r in rows], "llrrrr")
        console.print(f"wrote {rec.write(args.json)}")


if __name__ == "__main__":
    main()
