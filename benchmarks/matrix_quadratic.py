"""Shampoo and SOAP on an ill-conditioned matrix quadratic, against tuned Adam and the peer
implementations of the same rules, each at its best learning rate.

    f(X) = ½ tr((X − X*)ᵀ L (X − X*) R),   ∇f = L (X − X*) R,

with L (m×m) and R (n×n) SPD of condition number `cond` each: the Hessian L ⊗ R has condition
cond², and its Kronecker structure is exactly what Shampoo's factors estimate. Every
contender gets the same start, the same β's and preconditioning frequency, and a sweep of
learning rates (quarter decades); its score at one lr is (steps to reach f/f₀ ≤ target,
then the final f/f₀), AlgoPerf's time-to-target with the final value breaking ties. Printed:
each contender's best score and its lr, and whether thalweg's rule is at least as good as
each peer (and as Adam). HeavyBall runs eagerly here (same math; its compile is for speed).

    python benchmarks/matrix_quadratic.py [--m 64 --n 32 --cond 1e3 --steps 300]
"""

from __future__ import annotations

import argparse
import math
import re
import time
import warnings
from collections.abc import Callable

import torch

Factory = Callable[[list[torch.nn.Parameter], float], torch.optim.Optimizer]
LRS = tuple(10.0 ** (e / 4) for e in range(-12, 3))  # 1e-3 … 3.2
TARGET = 1e-4
Score = tuple[float, float]  # (steps to f/f0 ≤ TARGET (inf: never), final f/f0)


def spd(d: int, cond: float, g: torch.Generator) -> torch.Tensor:
    """A random SPD matrix with eigenvalues log-spaced in [1, cond]."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return (q * torch.logspace(0, math.log10(cond), d, dtype=torch.float64)) @ q.T


def problem(m: int, n: int, cond: float, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(L, R, X*, X₀) in float32."""
    g = torch.Generator().manual_seed(seed)
    L, R = spd(m, cond, g), spd(n, cond, g)
    target = torch.randn(m, n, generator=g, dtype=torch.float64)
    x0 = torch.randn(m, n, generator=g, dtype=torch.float64)
    return tuple(t.float() for t in (L / cond, R, target, x0))


def loss(x: torch.Tensor, L: torch.Tensor, R: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    d = x - target
    return 0.5 * (d * (L @ d @ R)).sum()


def run(factory: Factory, lr: float, prob: tuple[torch.Tensor, ...], steps: int,
        target: float = TARGET) -> Score:
    """(steps to reach f/f₀ ≤ target, final f/f₀); inf for what diverged or was not reached."""
    L, R, xs, x0 = prob
    x = torch.nn.Parameter(x0.clone())
    opt = factory([x], lr)
    f0 = float(loss(x0, L, R, xs))
    reached = math.inf
    for t in range(steps):
        opt.zero_grad()
        f = loss(x, L, R, xs)
        value = f.item()
        if not math.isfinite(value):
            return math.inf, math.inf
        if reached == math.inf and value <= target * f0:
            reached = t
        f.backward()
        opt.step()
    f_end = float(loss(x.detach(), L, R, xs))
    if reached == math.inf and f_end <= target * f0:
        reached = steps
    return reached, (f_end / f0 if math.isfinite(f_end) else math.inf)


def contenders(freq: int) -> dict[str, dict[str, Factory]]:
    """rule → label → factory(params, lr); equal preconditioning frequency everywhere."""
    import thalweg.optim as to

    soap = {"betas": (0.9, 0.95), "shampoo_beta": 0.95, "weight_decay": 0.0, "precondition_frequency": freq}
    out: dict[str, dict[str, Factory]] = {
        "adam": {"thalweg Adam": lambda ps, lr: to.Adam(ps, lr=lr)},
        "shampoo": {"thalweg Shampoo": lambda ps, lr: to.Shampoo(ps, lr=lr, precondition_frequency=freq)},
        "soap": {"thalweg SOAP": lambda ps, lr: to.SOAP(ps, lr=lr, **soap)},
    }
    try:
        import pytorch_optimizer as po
        from pytorch_optimizer.optimizer.utils.graft import LayerWiseGrafting

        out["shampoo"]["pytorch_optimizer ScalableShampoo"] = lambda ps, lr: po.ScalableShampoo(
            ps, lr=lr, start_preconditioning_step=1, preconditioning_compute_steps=freq,
            graft_type=LayerWiseGrafting.RMSPROP)
        out["shampoo"]["pytorch_optimizer Shampoo"] = lambda ps, lr: po.Shampoo(
            ps, lr=lr, preconditioning_compute_steps=freq)
        out["soap"]["pytorch_optimizer SOAP"] = lambda ps, lr: po.SOAP(ps, lr=lr, **soap)
    except ImportError:
        pass
    try:
        import heavyball
        import heavyball.utils

        heavyball.utils.compile_mode = None  # eager: the same math without minutes of autotuning
        out["soap"]["heavyball SOAP"] = lambda ps, lr: heavyball.SOAP(
            ps, lr=lr, **soap, use_precond_schedule=False, compile_step=False)
    except ImportError:
        pass
    return out


def sweep(factory: Factory, probs: list[tuple[torch.Tensor, ...]], steps: int,
          lrs: tuple[float, ...] = LRS) -> tuple[Score, float]:
    """(best score, its lr) over the learning rates; a score at one lr is the mean over the
    problems (seeds) of steps-to-target and of log10 final f/f₀."""
    results = []
    for lr in lrs:
        try:
            scores = [run(factory, lr, p, steps) for p in probs]
        except (RuntimeError, ValueError):  # a peer's linear algebra failing is a divergence
            scores = [(math.inf, math.inf)]
        mean_steps = sum(s for s, _ in scores) / len(scores)
        mean_log = sum(math.log10(f) if 0 < f < math.inf else (math.inf if f else -99) for _, f in scores) / len(scores)
        results.append(((mean_steps, 10.0 ** mean_log if mean_log < math.inf else math.inf), lr))
    return min(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--cond", type=float, default=1e3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--freq", type=int, default=10, help="preconditioning frequency of every contender")
    ap.add_argument("--seeds", type=int, default=3, help="problems (seeds) averaged at each lr")
    ap.add_argument("--json", default=None, help="write the table and figures here (thalweg.record)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # small matrices: threads only add synchronization
    print(f"f = ½ tr((X−X*)ᵀL(X−X*)R), X {args.m}×{args.n}, cond(L) = cond(R) = {args.cond:g} "
          f"(Hessian {args.cond ** 2:g}), {args.steps} steps, preconditioning every {args.freq}, "
          f"lr ∈ {{{', '.join(f'{lr:.0e}' for lr in LRS)}}}\n")
    best: dict[str, Score] = {}
    rows: list[list[str]] = []
    from thalweg.record import Record

    rec = Record()
    print(f"{'implementation':<36}{f'steps to {TARGET:g}':>16}{'final f/f0':>12}{'at lr':>10}{'sweep s':>9}")
    for impls in contenders(args.freq).values():
        for label, factory in impls.items():
            t0 = time.perf_counter()
            probs = [problem(args.m, args.n, args.cond, s) for s in range(args.seeds)]
            score, lr = sweep(factory, probs, args.steps)
            best[label] = score
            reached = f"{score[0]:.1f}" if math.isfinite(score[0]) else "not reached"
            bold = (lambda c: f"**{c}**") if label.startswith("thalweg") and label != "thalweg Adam" else str
            rows.append([bold(label), bold(reached), f"{score[1]:.2e}", f"{lr:.2g}"])
            key = re.sub(r"\W+", "_", label).strip("_")
            rec.figure(f"{key}.steps", score[0])
            rec.figure(f"{key}.final", score[1])
            rec.figure(f"{key}.lr", lr)
            print(f"{label:<36}{score[0]:>16.1f}{score[1]:>12.2e}{lr:>10.2g}{time.perf_counter() - t0:>9.1f}")
    print()
    for ours in ("thalweg Shampoo", "thalweg SOAP"):
        rule = ours.split()[1].lower()
        for label in [*contenders(args.freq)[rule], "thalweg Adam"]:
            if label != ours:
                verdict = "yes" if best[ours] <= best[label] else "NO"
                other = re.sub(r"\W+", "_", label).strip("_")
                rec.figure(f"{ours.replace(' ', '_')}.as_good_as.{other}", verdict)
                print(f"{ours} at least as good as {label}: {verdict} "
                      f"({best[ours][0]:.1f} vs {best[label][0]:.1f} steps; {best[ours][1]:.2e} vs {best[label][1]:.2e})")

    rec.table("contenders", ["implementation", f"steps to f/f₀ ≤ {TARGET:g}", "final f/f₀", "at lr"], rows, "lrrr")
    if args.json:
        print(f"wrote {rec.write(args.json)}")


if __name__ == "__main__":
    main()
