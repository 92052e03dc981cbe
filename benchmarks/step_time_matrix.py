"""Time the matrix rules' `step()` (Muon, Adafactor, Shampoo, SOAP), thalweg against every
peer that implements the rule, in the style of step_time.py: one process, interleaved round
by round, median per implementation, ratio thalweg / theirs.

Equal preconditioning frequency: every Shampoo/SOAP runs its inverse roots / eigenbases every
`--freq` steps, and one timed round is `--freq` steps, so each round holds one refresh; the
figure is the mean step time within a round. Muon's peers take only 2-D parameters, so its
set is the matrices alone; the others get matrices and vectors. HeavyBall runs eagerly unless
`--heavyball-compile` (its CPU autotuning takes minutes per shape).

    python benchmarks/step_time_matrix.py [--rounds 10] [--rules muon,adafactor,shampoo,soap]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings
from collections.abc import Callable

from step_time import restore_grads  # the sibling benchmark (this folder is on sys.path)

MATRICES = [(256, 256)] * 8 + [(512, 128)] * 4
VECTORS = [(256,)] * 8
Factory = Callable[[list], object]
RULES = ("muon", "adafactor", "shampoo", "soap")


def shapes(rule: str) -> list[tuple[int, ...]]:
    return MATRICES if rule == "muon" else MATRICES + VECTORS


def implementations(rule: str, freq: int, hb_compile: bool) -> dict[str, Factory]:
    """label → factory(params) for every implementation of `rule` that exists here."""
    import torch

    import thalweg.optim as to

    impls: dict[str, Factory] = {}
    if rule == "muon":
        impls["thalweg"] = lambda ps: to.Muon(ps, lr=0.02)
        impls["thalweg-float32"] = lambda ps: to.Muon(ps, lr=0.02, ns_dtype="float32")
        impls["torch"] = lambda ps: torch.optim.Muon(ps, lr=0.02)
    elif rule == "adafactor":
        impls["thalweg"] = lambda ps: to.Adafactor(ps, lr=1e-2)
        impls["torch-foreach"] = lambda ps: torch.optim.Adafactor(ps, lr=1e-2, foreach=True)
        impls["torch-forloop"] = lambda ps: torch.optim.Adafactor(ps, lr=1e-2, foreach=False)
    elif rule == "shampoo":
        impls["thalweg"] = lambda ps: to.Shampoo(ps, lr=1e-3, precondition_frequency=freq)
    elif rule == "soap":
        impls["thalweg"] = lambda ps: to.SOAP(ps, lr=3e-3, precondition_frequency=freq)
    impls.update(_peers(rule, freq, hb_compile))
    return impls


def _peers(rule: str, freq: int, hb_compile: bool) -> dict[str, Factory]:
    out: dict[str, Factory] = {}
    try:
        import pytorch_optimizer as po

        if rule == "muon":
            out["pytorch_optimizer"] = lambda ps: po.Muon([{"params": ps, "use_muon": True}], lr=0.02)
        elif rule == "adafactor":
            out["pytorch_optimizer"] = lambda ps: po.AdaFactor(ps, lr=1e-2)
        elif rule == "shampoo":
            out["pytorch_optimizer Shampoo"] = lambda ps: po.Shampoo(ps, lr=1e-3, preconditioning_compute_steps=freq)
            out["pytorch_optimizer Scalable"] = lambda ps: po.ScalableShampoo(
                ps, lr=1e-3, start_preconditioning_step=1, preconditioning_compute_steps=freq, block_size=1024)
        elif rule == "soap":
            out["pytorch_optimizer"] = lambda ps: po.SOAP(ps, lr=3e-3, precondition_frequency=freq)
    except ImportError:
        pass
    try:
        import heavyball
        import heavyball.utils

        if not hb_compile:
            heavyball.utils.compile_mode = None
        label = "heavyball" if hb_compile else "heavyball-eager"
        if rule == "muon":
            out[label] = lambda ps: heavyball.Muon(ps, lr=0.02, compile_step=hb_compile)
        elif rule == "soap":
            out[label] = lambda ps: heavyball.SOAP(ps, lr=3e-3, precondition_frequency=freq,
                                                   use_precond_schedule=False, compile_step=hb_compile)
    except ImportError:
        pass
    try:
        from transformers.optimization import Adafactor as HFAdafactor

        if rule == "adafactor":
            out["transformers"] = lambda ps: HFAdafactor(ps, lr=None, relative_step=True, scale_parameter=True)
    except ImportError:
        pass
    return out


def make_params(rule: str, seed: int = 0) -> list:
    import torch

    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.02) for s in shapes(rule)]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    return ps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--freq", type=int, default=10, help="preconditioning frequency (and steps per round)")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--heavyball-compile", action="store_true")
    ap.add_argument("--json", default=None, help="write the table and figures here (thalweg.record)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rules = [r for r in args.rules.split(",") if r]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; matrices {len(MATRICES)} "
          f"({sum(torch.Size(s).numel() for s in MATRICES) / 1e6:.2f} M), vectors {len(VECTORS)}; "
          f"preconditioning every {args.freq} steps, {args.freq} steps per round")
    opts: dict[tuple[str, str], object] = {}
    grads: dict[tuple[str, str], list] = {}
    first: dict[tuple[str, str], float] = {}
    for rule in rules:
        for label, factory in implementations(rule, args.freq, args.heavyball_compile).items():
            ps = make_params(rule)
            opt = factory(ps)
            grads[(rule, label)] = [(p, p.grad) for p in ps]
            t0 = time.perf_counter()
            opt.step()
            first[(rule, label)] = time.perf_counter() - t0
            opts[(rule, label)] = opt
    times: dict[tuple[str, str], list[float]] = {k: [] for k in opts}
    keys = list(opts)
    for _ in range(args.rounds):
        random.shuffle(keys)
        for k in keys:
            t0 = time.perf_counter()
            for _ in range(args.freq):
                restore_grads(grads[k])
                opts[k].step()
            times[k].append((time.perf_counter() - t0) / args.freq)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"\nmedian step time (ms) over {args.rounds} interleaved rounds; ratio = thalweg / theirs\n")
    header = f"{'rule':<11}{'implementation':<28}{'ms':>9}{'ratio':>8}{'1st step s':>12}"
    print(header)
    print("-" * len(header))
    summary = []
    from thalweg.record import Record

    rec = Record()
    rec.figure("rounds", args.rounds)
    rec.figure("threads", torch.get_num_threads())
    rows = []
    for rule in rules:
        ours = med[(rule, "thalweg")]
        for (_, label), ms in sorted(((k, v) for k, v in med.items() if k[0] == rule), key=lambda kv: kv[1]):
            print(f"{rule:<11}{label:<28}{ms:>9.2f}{ours / ms:>8.2f}{first[(rule, label)]:>12.2f}")
            rec.figure(f"{rule}.{label.replace(' ', '_')}_ms", ms)
            rows.append([rule, DISPLAY.get(label, label).format(rule=rule), f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}",
                         f"{ours / ms:.2f}"])
        peers = {lab: v for (r, lab), v in med.items() if r == rule and not lab.startswith("thalweg")}
        if peers:
            fastest = min(peers, key=peers.get)
            summary.append((rule, ours / peers[fastest], fastest))
            rec.figure(f"{rule}.fastest_peer_ratio", ours / peers[fastest])
            rec.figure(f"{rule}.fastest_peer", fastest)
        print()
    rec.table("step_time", ["rule", "implementation", "ms / step", "thalweg / it"], rows, "llrr")
    print("summary: thalweg / fastest peer (target ≤ 0.70)")
    for rule, ratio, fastest in summary:
        print(f"  {rule:<10} {ratio:5.2f}  (fastest peer: {fastest})")
    if args.json:
        print(f"wrote {rec.write(args.json)}")


#: how docs/contenders.md names an implementation (default: its label)
DISPLAY = {"thalweg": "**thalweg**", "thalweg-float32": 'thalweg, `ns_dtype="float32"`', "torch": "torch.optim.Muon",
           "torch-foreach": "torch.optim (foreach)", "torch-forloop": "torch.optim (for-loop)",
           "heavyball-eager": "heavyball (eager)", "pytorch_optimizer Scalable": "pytorch_optimizer ScalableShampoo"}


if __name__ == "__main__":
    main()
