"""thalweg.curvature vs PyHessian on the same model, data and tolerance.

An MLP (40→32→32→10, 2,698 parameters) trained briefly on MNIST-1D; the Hessian of the mean
cross-entropy on 1,000 training samples (one batch for both tools, each caching the gradient
graph). Reference: the dense float64 Hessian and `torch.linalg.eigvalsh`. For each seed the
peers run back to back; HVPs are counted by wrapping each tool's product function.

Run: .venv/bin/python benchmarks/curvature.py   (about a minute, one thread)
     .venv/bin/python benchmarks/curvature.py --figures [DIR]   (redraws DIR/terrain_*.png;
                                                              default docs/images)
     --json PATH: also write the figures and the printed tables (thalweg.record) for `make docs`
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from thalweg.curvature import HessianOperator, certify_min_sign, eigs, trace
from thalweg.data import load_dataset, standardize
from thalweg.models import MLP

SEEDS = (0, 1, 2, 3, 4)
TOL = 1e-3
TIGHT = 1e-5  # PyHessian's relative-change tolerance needed for ~1e-3 actual error


def setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    splits, _ = standardize(load_dataset("mnist1d", seed=0))
    torch.manual_seed(0)
    model = MLP(splits.in_shape[0], 10, width=32, depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = splits.x_train, splits.y_train
    g = torch.Generator().manual_seed(0)
    for _ in range(400):  # brief training: ~400 minibatch steps
        idx = torch.randint(0, len(x), (128,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    return model, x[:1000], y[:1000]


def reference(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    m64 = copy.deepcopy(model).double()
    H = HessianOperator(m64, F.cross_entropy, (x.double(), y)).dense()
    H = (H + H.T) / 2
    return torch.linalg.eigvalsh(H), float(H.trace())


class Counter:
    def __init__(self) -> None:
        self.n = 0


@contextlib.contextmanager
def counting_pyhessian_hvps() -> Iterator[tuple[Any, Counter]]:
    """PyHessian's module with its Hessian-vector product wrapped to count calls."""
    ph = importlib.import_module("pyhessian.hessian")  # the module (the package re-exports a class)
    counter = Counter()
    original = ph.hessian_vector_product

    def counted(gradsH, params, v):  # type: ignore[no-untyped-def]
        counter.n += 1
        return original(gradsH, params, v)

    ph.hessian_vector_product = counted
    try:
        yield ph, counter
    finally:
        ph.hessian_vector_product = original


def pyhessian_runs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, tuple]:
    out = {}
    with counting_pyhessian_hvps() as (ph, counter):
        for task in ("top-1", "top-5", "trace", "top-5 tight"):
            torch.manual_seed(seed)
            model.zero_grad()
            t0 = time.perf_counter()  # includes building the gradient graph, as thalweg's timing does
            h = ph.hessian(model, F.cross_entropy, data=(x, y), cuda=False)
            counter.n = 0
            if task == "trace":
                val: object = statistics.fmean(h.trace(maxIter=100, tol=TOL))
            elif task == "top-5 tight":  # what power iteration needs to really reach ~1e-3
                val = h.eigenvalues(maxIter=1000, tol=TIGHT, top_n=5)[0]
            else:
                val = h.eigenvalues(maxIter=100, tol=TOL, top_n=1 if task == "top-1" else 5)[0]
            out[task] = (val, counter.n, time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return out


def thalweg_runs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, trace_budget: int) -> dict[str, tuple]:
    out = {}
    for task in ("top-1", "top-5", "trace", "sign"):
        op = HessianOperator(model, F.cross_entropy, (x, y), backend="double_backward")
        t0 = time.perf_counter()
        if task == "trace":
            val: object = trace(op, "hutch++", trace_budget, seed=seed).estimate
        elif task == "sign":
            val = certify_min_sign(op, max_hvps=150, seed=seed)
        else:
            val = eigs(op, k=1 if task == "top-1" else 5, which="largest", tol=TOL, seed=seed).eigenvalues.tolist()
        out[task] = (val, op.num_matvecs, time.perf_counter() - t0)
    return out


def rel_err(est: object, ev: torch.Tensor, tr: float, task: str) -> float:
    if task == "trace":
        return abs(float(est) - tr) / abs(tr)  # type: ignore[arg-type]
    k = 1 if task == "top-1" else 5
    if len(est) < k:  # type: ignore[arg-type]
        return float("inf")
    truth = ev[-k:].flip(0).tolist()
    got = sorted((float(v) for v in est), reverse=True)  # type: ignore[union-attr]
    return max(abs(a - b) / abs(b) for a, b in zip(got, truth, strict=True))


def main(rec: Any) -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model, x, y = setup()
    n = sum(p.numel() for p in model.parameters())
    t1 = time.perf_counter()
    ev, tr = reference(model, x, y)
    print(f"model: MLP 40-32-32-10 ({n} params) trained 400 Adam steps on MNIST-1D; Hessian on {len(x)} samples")
    print(f"setup {t1 - t0:.1f}s; dense float64 reference {time.perf_counter() - t1:.1f}s: "
          f"λ1..5 = {[round(v, 4) for v in ev[-5:].flip(0).tolist()]}, λ_min = {float(ev[0]):.4g}, tr = {tr:.4f}")
    rows: dict[tuple[str, str], list[tuple[float, int, float]]] = {}
    signs = []
    for seed in SEEDS:  # interleaved: PyHessian then thalweg, same seed
        ph = pyhessian_runs(model, x, y, seed)
        tw = thalweg_runs(model, x, y, seed, trace_budget=ph["trace"][1])
        for task in ("top-1", "top-5", "trace"):
            for name, res in (("PyHessian", ph), ("thalweg", tw)):
                val, hv, sec = res[task]
                rows.setdefault((task, name), []).append((rel_err(val, ev, tr, task), hv, sec))
        val, hv, sec = ph["top-5 tight"]
        rows.setdefault(("top-5", f"PyHessian tol={TIGHT:g}"), []).append((rel_err(val, ev, tr, "top-5"), hv, sec))
        signs.append(tw["sign"])
    print(f"\nmedian over seeds {list(SEEDS)}; tolerance {TOL} for both; trace: thalweg Hutch++ gets PyHessian's HVP budget")
    table = [f"{'task':<7} {'method':<22} {'HVPs':>6} {'seconds':>8} {'rel. error':>11}   ratio thalweg/PyHessian"]
    for task in ("top-1", "top-5", "trace"):
        med = {}
        names = ("PyHessian", "thalweg") + ((f"PyHessian tol={TIGHT:g}",) if task == "top-5" else ())
        for name in names:
            errs, hvps, secs = zip(*rows[(task, name)], strict=True)
            med[name] = (statistics.median(errs), statistics.median(hvps), statistics.median(secs))
            line = f"{task:<7} {name:<22} {med[name][1]:>6.0f} {med[name][2]:>8.3f} {med[name][0]:>11.2e}"
            key = f"{task}.{name.split()[0]}{'_tight' if 'tol=' in name else ''}"
            rec.figure(f"{key}.error", med[name][0])
            rec.figure(f"{key}.hvps", med[name][1])
            rec.figure(f"{key}.seconds", med[name][2])
            if name != "thalweg" and "thalweg" in med:
                p = med["thalweg"]
                line += f"   (thalweg needs {p[1] / med[name][1]:.2f}× its HVPs)"
                rec.figure(f"{key}.thalweg_hvp_ratio", p[1] / med[name][1])
            elif name == "thalweg":
                p = med["PyHessian"]
                line += f"   HVPs {med[name][1] / p[1]:.2f}  time {med[name][2] / p[2]:.2f}  error {med[name][0] / p[0]:.2g}"
                rec.figure(f"{task}.hvp_ratio", med[name][1] / p[1])
                rec.figure(f"{task}.time_ratio", med[name][2] / p[2])
                rec.figure(f"{task}.error_ratio", med[name][0] / p[0])
            table.append(line)
            print(line)
    truth = "negative" if float(ev[0]) < 0 else "positive"
    for seed, (cert, hv, sec) in zip(SEEDS, signs, strict=True):
        print(f"sign of λ_min (seed {seed}): {cert.sign} in {hv} HVPs, {sec:.3f}s — {cert.certificate}; "
              f"reference λ_min = {float(ev[0]):.4g} ({truth})")
    hv_signs = sorted(h for _, h, _ in signs)
    span = f"{hv_signs[0]}–{hv_signs[-1]}" if hv_signs[0] != hv_signs[-1] else f"{hv_signs[0]}"
    every = "on every seed" if all(c.sign == truth for c, _, _ in signs) else "(not on every seed)"
    table.append(f"sign of λ_min: {truth} in {span} HVPs {every} (residual certificate; reference "
                 f"λ_min = {float(ev[0]):.3g})".replace("-", "−"))
    rec.block("accuracy", "\n".join(table))
    rec.figure("sign.hvps_min", hv_signs[0])
    rec.figure("sign.hvps_max", hv_signs[-1])
    rec.figure("lambda_min", float(ev[0]))
    for i, v in enumerate(ev[-5:].flip(0).tolist(), 1):
        rec.figure(f"lambda_{i}", v)
    sq = ev.square()
    rec.figure("outliers10_frobenius_share", float(sq[-10:].sum() / sq.sum()))
    rec.figure("params", n)
    t5, p5 = rows[("top-5", "thalweg")], rows[("top-5", "PyHessian")]
    worst = max(e for e, _, _ in t5)
    ratio = statistics.median(h for _, h, _ in t5) / statistics.median(h for _, h, _ in p5)
    smaller = statistics.median(e for e, _, _ in t5) < statistics.median(e for e, _, _ in p5)
    sign_ok = all(c.sign == truth and h <= 150 for c, h, _ in signs)
    print("\ntargets:")
    print(f"  top-5 within 1e-3 relative on every seed: {'met' if worst <= 1e-3 else 'NOT met'} (worst {worst:.1e})")
    print(f"  ≤ 1/4 of PyHessian's HVPs at the same tolerance: {'met' if ratio <= 0.25 else 'NOT met'} "
          f"(ratio {ratio:.2f})")
    print(f"  smaller error than PyHessian: {'met' if smaller else 'NOT met'}")
    print(f"  sign of λ_min certified in ≤ 150 HVPs: {'met' if sign_ok else 'NOT met'}")
    hutch = hutchpp_budgets(model, x, y, tr)
    for budget, err in hutch.items():
        rec.figure(f"hutchpp.{budget}.error", err)
    lines = [*backends(model, x, y, rec), "", *monitor_overhead(model, x, y, rec)]
    rec.block("costs", "\n".join(lines))
    rec.figure("seconds", time.perf_counter() - t0)
    print(f"total {time.perf_counter() - t0:.0f}s")


def hutchpp_budgets(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, tr: float,
                    budgets: tuple[int, ...] = (48, 90)) -> dict[int, float]:
    """Hutch++'s median relative trace error over the seeds at larger HVP budgets."""
    out = {}
    for b in budgets:
        errs = [abs(trace(HessianOperator(model, F.cross_entropy, (x, y)), "hutch++", b, seed=s).estimate - tr) / abs(tr)
                for s in SEEDS]
        out[b] = statistics.median(errs)
        print(f"Hutch++ with {b} HVPs: median relative trace error {out[b]:.2%}")
    return out


def backends(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rec: Any) -> list[str]:
    """Seconds per full-data HVP for each backend, interleaved, and what `auto` picks."""
    lines = ["HVP backends (1,000 samples; ms per product, median of 15, interleaved):",
             f"{'batches':>8} {'double_backward':>16} {'fwd_over_rev':>13} {'ratio':>6}  auto picks"]
    for nb in (1, 4):
        batches = list(zip(x.chunk(nb), y.chunk(nb), strict=True))
        ops = {b: HessianOperator(model, F.cross_entropy, batches, backend=b)
               for b in ("double_backward", "forward_over_reverse")}
        v = torch.randn(ops["double_backward"].dim)
        times: dict[str, list[float]] = {b: [] for b in ops}
        for op in ops.values():  # warm-up (and graph caching for one batch)
            op.matvec(v)
        for _ in range(15):
            for b, op in ops.items():
                t = time.perf_counter()
                op.matvec(v)
                times[b].append(time.perf_counter() - t)
        med = {b: 1e3 * statistics.median(t) for b, t in times.items()}
        auto = HessianOperator(model, F.cross_entropy, batches).backend
        lines.append(f"{nb:>8} {med['double_backward']:>16.2f} {med['forward_over_reverse']:>13.2f} "
                     f"{med['forward_over_reverse'] / med['double_backward']:>6.2f}  {auto}")
        rec.figure(f"backends.{nb}.ratio", med["forward_over_reverse"] / med["double_backward"])
        rec.figure(f"backends.{nb}.auto", auto)
    print("\n" + "\n".join(lines))
    return lines


def monitor_overhead(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rec: Any) -> list[str]:
    """A training step (batch 128) bare, with hooks attached, and with hooks + measure()."""
    from thalweg.monitors import Monitor

    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    xb, yb = x[:128], y[:128]
    mon = Monitor(model)

    def step(measure: bool) -> None:
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        if measure:
            mon.snapshot()
        opt.step()
        if measure:
            mon.measure(loss=loss)

    times: dict[str, list[float]] = {"bare": [], "paused hooks": [], "hooks": [], "hooks+measure": []}
    for _ in range(60):
        for name in times:
            mon.attach(record=name != "paused hooks") if name != "bare" else mon.detach()
            t = time.perf_counter()
            step(name == "hooks+measure")
            times[name].append(time.perf_counter() - t)
    mon.detach()
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    lines = ["Monitor overhead per training step (MLP, batch 128; median ms of 60, interleaved):",
             "  " + "   ".join(f"{k} {v:.3f} ms ({v / med['bare']:.2f}×)" for k, v in med.items())]
    for k, v in med.items():
        rec.figure(f"monitor.{k.replace(' ', '_')}_ratio", v / med["bare"])
    print("\n" + "\n".join(lines))
    return lines

def figures(out_dir: Path) -> None:
    """docs/images/terrain_density.png and terrain_accuracy.png (error vs HVPs for both tools)."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thalweg.curvature import density, plot_density

    torch.set_num_threads(1)
    model, x, y = setup()
    ev, tr = reference(model, x, y)
    op = HessianOperator(model, F.cross_entropy, (x, y))
    dens = density(op, steps=90, num_probes=3, sigma=0.05)
    plot_density(dens, out_dir / "terrain_density.png",
                 title="MLP on MNIST-1D: Hessian spectrum (SLQ, 3 probes × 90 HVPs)")
    tols = (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
    pts: dict[str, list[tuple[int, float]]] = {"PyHessian (power iteration + deflation)": [],
                                                "thalweg (Lanczos, full reorthogonalization)": []}
    with counting_pyhessian_hvps() as (ph, counter):
        for t in tols:
            torch.manual_seed(0)
            model.zero_grad()
            h = ph.hessian(model, F.cross_entropy, data=(x, y), cuda=False)
            counter.n = 0
            val = h.eigenvalues(maxIter=1000, tol=t, top_n=5)[0]
            pts["PyHessian (power iteration + deflation)"].append((counter.n, rel_err(val, ev, tr, "top-5")))
            op = HessianOperator(model, F.cross_entropy, (x, y))
            r = eigs(op, k=5, tol=t, seed=0)
            pts["thalweg (Lanczos, full reorthogonalization)"].append((r.num_hvps, rel_err(r.eigenvalues.tolist(), ev, tr, "top-5")))
    model.zero_grad(set_to_none=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    for (name, p), style in zip(pts.items(), ("o--", "s-"), strict=True):
        hv, err = zip(*sorted(p), strict=True)
        ax.loglog(hv, [max(e, 1e-16) for e in err], style, label=name)
    ax.axhline(1e-3, color="0.5", lw=0.8, ls=":")
    ax.text(ax.get_xlim()[0] * 1.1, 1.3e-3, "1e-3", color="0.4", fontsize=8)
    ax.set_xlabel("Hessian-vector products")
    ax.set_ylabel("max relative error, top-5 eigenvalues")
    ax.set_title("Top-5 eigenvalues: error vs HVPs (tolerance 3e-1 … 1e-5)", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "terrain_accuracy.png", dpi=100)
    plt.close(fig)
    print(f"wrote {out_dir / 'terrain_density.png'} and {out_dir / 'terrain_accuracy.png'}")


if __name__ == "__main__":
    import argparse

    from thalweg.record import Record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figures", nargs="?", const=Path(__file__).resolve().parents[1] / "docs" / "images",
                    type=Path, default=None, help="redraw terrain_density.png and terrain_accuracy.png into DIR")
    ap.add_argument("--json", default=None, help="write the figures and tables here (thalweg.record)")
    args = ap.parse_args()
    if args.figures is not None:
        args.figures.mkdir(parents=True, exist_ok=True)
        figures(args.figures)
    else:
        out = Record()
        main(out)
        if args.json:
            print(f"wrote {out.write(args.json)}")
