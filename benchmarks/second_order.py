"""Second-order optimizers against tuned SGD-momentum and Adam, in one process.

1. The seeds' 2-D surfaces and an ill-conditioned quadratic (κ = 1e4, n = 100): iterations and
   seconds until f − f* ≤ tol, for Newton (damped, saddle-free), L-BFGS, AdaHessian, SGD with
   momentum and Adam (first-order learning rates and AdaHessian's tuned on a grid; the best
   is shown). K-FAC needs layers, so it sits these out.
2. An MLP on MNIST-1D: epochs (minibatch methods) or full-batch iterations (Newton, L-BFGS)
   and seconds until the training loss ≤ 0.6, learning rates tuned on a grid.
3. Step time (forward + backward + step) of K-FAC and AdaHessian against a plain Adam step,
   interleaved in the same process; the ratio is printed.

Run: ``.venv/bin/python benchmarks/second_order.py`` (about 3 minutes, one thread);
``--json PATH`` also writes the tables and figures (``thalweg.record``) for ``make docs``.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thalweg.landscape import functions
from thalweg.optim.second_order.adahessian import AdaHessian
from thalweg.optim.second_order.kfac import KFAC
from thalweg.optim.second_order.lbfgs import LBFGS
from thalweg.optim.second_order.newton import Newton

torch.set_num_threads(1)
D = torch.float64
Make = Callable[[list[torch.Tensor]], torch.optim.Optimizer]

SECOND: dict[str, Make] = {
    "newton (damped)": lambda p: Newton(p),
    "newton (saddle-free)": lambda p: Newton(p, mode="saddle_free"),
    "l-bfgs": lambda p: LBFGS(p, max_iter=1),
}
GRIDS: dict[str, tuple[Callable[[list[torch.Tensor], float], torch.optim.Optimizer], tuple]] = {
    "adahessian": (lambda p, lr: AdaHessian(p, lr=lr), (0.1, 0.3, 1.0)),
    "sgd-momentum": (lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
                     (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)),
    "adam": (lambda p, lr: torch.optim.Adam(p, lr=lr), (1e-2, 3e-2, 0.1, 0.3)),
}
CLOSURE = {"newton (damped)", "newton (saddle-free)", "l-bfgs", "adahessian"}


def _quadratic(n: int = 100, kappa: float = 1e4) -> tuple[Callable, torch.Tensor, float]:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    a = q @ torch.diag(torch.logspace(0, math.log10(kappa), n, dtype=D)) @ q.T
    b = torch.randn(n, generator=g, dtype=D)
    xs = torch.linalg.solve(a, b)
    fstar = float(-0.5 * b @ xs)
    return (lambda x: 0.5 * x @ a @ x - b @ x), torch.zeros(n, dtype=D), fstar


def _problems() -> list[tuple[str, Callable, torch.Tensor, float, float]]:
    out = []
    for name in ("rosenbrock", "beale", "ravine", "sinsin"):
        fn = functions.get(name)
        out.append((f"{name} {fn.default_start}", fn, torch.tensor(fn.default_start, dtype=D),
                    float(fn.global_minimum), 1e-8))
    f, x0, fstar = _quadratic()
    out.append(("quadratic n=100 κ=1e4", f, x0, fstar, 1e-8 * float(f(x0) - fstar)))
    return out


def _run_point(f: Callable, x0: torch.Tensor, fstar: float, tol: float, make: Make,
               closure_api: bool, max_iters: int) -> tuple[int | None, float, float]:
    x = x0.clone().requires_grad_(True)
    opt = make([x])

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    t0 = time.perf_counter()
    for it in range(1, max_iters + 1):
        if closure_api:
            opt.step(closure)
        else:
            closure()
            opt.step()
        with torch.no_grad():
            gap = float(f(x)) - fstar
        if not math.isfinite(gap):
            break
        if gap <= tol:
            return it, time.perf_counter() - t0, gap
    return None, time.perf_counter() - t0, gap


def _fmt(iters: int | None, secs: float, cap: int) -> tuple[str, str]:
    return (str(iters), f"{secs:.3f}") if iters is not None else (f">{cap}", f"({secs:.2f})")


def surfaces() -> list[list[str]]:
    rows = []
    for label, f, x0, fstar, tol in _problems():
        for name, make in SECOND.items():
            it, s, _ = _run_point(f, x0, fstar, tol, make, True, 300)
            rows.append([label, name, "-", *_fmt(it, s, 300)])
        for name, (make_lr, grid) in GRIDS.items():
            cap = 3000
            best = None
            for lr in grid:
                it, s, _ = _run_point(f, x0, fstar, tol,
                                      lambda p, lr=lr, mk=make_lr: mk(p, lr), name in CLOSURE, cap)
                key = (it is None, it or 0, s)
                if best is None or key < best[0]:
                    best = (key, lr, it, s)
            _, lr, it, s = best
            rows.append([label, name, f"lr={lr:g}", *_fmt(it, s, cap)])
    return rows


# -- MNIST-1D -----------------------------------------------------------------------------
TARGET = 0.6


def _mnist() -> tuple[torch.Tensor, torch.Tensor]:
    from thalweg.data import load_dataset, standardize

    splits, _ = standardize(load_dataset("mnist1d", num_samples=2500))
    return splits.x_train, splits.y_train


def _mlp() -> nn.Module:
    from thalweg.models import MLP

    torch.manual_seed(0)
    return MLP(40, 10, width=64, depth=2)


def _minibatch(x: torch.Tensor, y: torch.Tensor, make: Callable[[nn.Module], Any],
               closure_api: bool, max_epochs: int = 25) -> tuple[int | None, float]:
    model = _mlp()
    opt = make(model)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 100):
            idx = perm[i : i + 100]

            def closure(idx: torch.Tensor = idx) -> torch.Tensor:
                opt.zero_grad()
                loss = F.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                return loss

            if closure_api:
                opt.step(closure)
            else:
                closure()
                opt.step()
        with torch.no_grad():
            loss = float(F.cross_entropy(model(x), y))
        if not math.isfinite(loss):
            break
        if loss <= TARGET:
            return epoch, time.perf_counter() - t0
    return None, time.perf_counter() - t0


def _fullbatch(x: torch.Tensor, y: torch.Tensor, make: Callable[[nn.Module], Any],
               max_iters: int) -> tuple[int | None, float]:
    model = _mlp()
    opt = make(model)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    t0 = time.perf_counter()
    for it in range(1, max_iters + 1):
        opt.step(closure)
        with torch.no_grad():
            if float(F.cross_entropy(model(x), y)) <= TARGET:
                return it, time.perf_counter() - t0
    return None, time.perf_counter() - t0


def mnist() -> list[list[str]]:
    x, y = _mnist()
    rows = []
    mini: dict[str, tuple[Callable[[nn.Module, float], Any], tuple, bool]] = {
        "k-fac": (lambda m, lr: KFAC(m, lr=lr), (0.05,), False),
        "adahessian": (lambda m, lr: AdaHessian(m.parameters(), lr=lr), (0.03, 0.1, 0.3), True),
        "sgd-momentum": (lambda m, lr: torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9),
                         (0.03, 0.1, 0.3), False),
        "adam": (lambda m, lr: torch.optim.Adam(m.parameters(), lr=lr), (0.003, 0.01, 0.03),
                 False),
    }
    for name, (make, grid, closure_api) in mini.items():
        results = []
        for lr in grid:
            ep, s = _minibatch(x, y, lambda m, lr=lr, mk=make: mk(m, lr), closure_api)
            results.append(((ep is None, ep or 0, s), lr, ep, s))
        _, lr, ep, s = min(results)
        rows.append(["MNIST-1D MLP (minibatch 100)", name, f"lr={lr:g}", *_fmt(ep, s, 25),
                     "epochs"])
    full = {
        "newton (saddle-free, Lanczos 20)": (lambda m: Newton(
            m.parameters(), mode="saddle_free", damping=1e-2, krylov_iters=20), 100),
        "l-bfgs": (lambda m: LBFGS(m.parameters(), max_iter=1), 500),
    }
    for name, (make, cap) in full.items():
        it, s = _fullbatch(x, y, make, cap)
        rows.append(["MNIST-1D MLP (full batch)", name, "-", *_fmt(it, s, cap), "iterations"])
    return rows


# -- step time ----------------------------------------------------------------------------
def step_times(steps: int = 60) -> list[list[str]]:
    torch.manual_seed(0)
    xb, yb = torch.randn(128, 256), torch.randint(0, 10, (128,))

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 10))

    runs: dict[str, tuple[nn.Module, Any, bool]] = {}
    for name, make, closure_api in (
        ("adam", lambda m: torch.optim.Adam(m.parameters(), lr=1e-3), False),
        ("k-fac (defaults: eigen, factors 1, inverses 10)", lambda m: KFAC(m), False),
        ("k-fac (cholesky)", lambda m: KFAC(m, inverse="cholesky"), False),
        ("k-fac (eigen, factors 10, inverses 100)", lambda m: KFAC(
            m, factor_update_every=10, inverse_update_every=100), False),
        ("adahessian", lambda m: AdaHessian(m.parameters(), lr=0.05), True),
        ("adahessian (update_every=10)", lambda m: AdaHessian(
            m.parameters(), lr=0.05, update_every=10), True),
    ):
        m = net()
        runs[name] = (m, make(m), closure_api)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(steps + 5):
        for name, (m, opt, closure_api) in runs.items():
            def closure(m: nn.Module = m, opt: Any = opt) -> torch.Tensor:
                opt.zero_grad()
                loss = F.cross_entropy(m(xb), yb)
                loss.backward()
                return loss

            t0 = time.perf_counter()
            if closure_api:
                opt.step(closure)
            else:
                closure()
                opt.step()
            if i >= 5:
                times[name].append(time.perf_counter() - t0)
    base = statistics.fmean(times["adam"])
    return [[name, f"{1e3 * statistics.median(t):.2f}", f"{1e3 * statistics.fmean(t):.2f}",
             f"{statistics.fmean(t) / base:.2f}"] for name, t in times.items()]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *map(line, rows)])


def _figures(rec: Any, table: str, rows: list[list[str]], key: Callable[[list[str]], str],
             cols: dict[str, int]) -> None:
    """Each row's cells as figures `<table>.<key>.<column>` (counts as int where they are)."""
    for r in rows:
        for col, i in cols.items():
            cell = r[i]
            slug = re.sub(r"\W+", "_", key(r)).strip("_")  # "newton (damped)" → "newton_damped"
            rec.figure(f"{table}.{slug}.{col}", int(cell) if cell.isdigit() else cell)


def main() -> None:
    import argparse

    from thalweg.record import Record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the tables and figures here (thalweg.record)")
    args = ap.parse_args()
    rec = Record()
    t0 = time.perf_counter()
    tables = [
        ("surfaces", "## Surfaces: iterations and seconds to f − f* ≤ 1e-8 (quadratic: 1e-8 of the gap)\n"
                     "(cap: 300 iterations for Newton/L-BFGS, 3000 for the rest; '>cap (s)' = not reached)\n",
         ["problem (start)", "method", "tuned", "iterations", "seconds"], surfaces, "lllrr"),
        ("mnist", f"\n## MNIST-1D MLP 40-64-64-10, 1800 samples: to training loss ≤ {TARGET}\n",
         ["setting", "method", "tuned", "count", "seconds", "unit"], mnist, "lllrrl"),
        ("step_time", "\n## Step time, MLP 256-512-512-10, batch 128 (forward + backward + step), interleaved\n",
         ["optimizer", "median ms", "mean ms", "mean / adam"], step_times, "lrrr"),
    ]
    for name, title, header, make, align in tables:
        print(title)
        rows = make()
        print(_table(header, rows))
        rec.table(name, header, rows, align)
        if name == "surfaces":
            _figures(rec, name, rows, lambda r: f"{r[0].split()[0]} {r[1]}", {"iterations": 3, "seconds": 4, "tuned": 2})
        elif name == "mnist":
            _figures(rec, name, rows, lambda r: r[1], {"count": 3, "seconds": 4, "tuned": 2})
        else:
            _figures(rec, name, rows, lambda r: r[0], {"median_ms": 1, "mean_ms": 2, "ratio": 3})
    total = time.perf_counter() - t0
    rec.figure("seconds", total)
    rec.block("footer", f"total {total:.0f} s, torch {torch.__version__}, 1 thread")
    print(f"\ntotal {total:.0f} s, torch {torch.__version__}, 1 thread")
    if args.json:
        print(f"wrote {rec.write(args.json)}")


if __name__ == "__main__":
    main()
