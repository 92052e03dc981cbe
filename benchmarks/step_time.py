"""Time one optimizer `step()` on 3.3 M parameters in 60 tensors, thalweg against its peers.

Every implementation of a rule (thalweg as it comes, compile="auto", and forced compiled
and eager; torch.optim fused, foreach and for-loop; pytorch_optimizer, HeavyBall,
torch-optimizer and the reference packages — lion-pytorch, schedulefree, prodigyopt — where
they implement the rule) runs in this one process, interleaved round by round, so machine noise hits all of them alike. Prints the
median step time of each, the ratio ours/theirs, thalweg's first-step (compile) time, and the
optimizer-state memory; `--memory` also measures, in a fresh process per implementation,
the peak memory growth of creating it and its first step, and that of later steps.

    python benchmarks/step_time.py [--rounds 30] [--rules adam,sgd] [--memory] [--warm-cache] [--stat min]
                                   [--threads 1] [--low-precision] [--json PATH]

`--json PATH` writes the figures and the README's table (`thalweg.record`) for `make docs`.

`--stat min` reports each implementation's fastest round instead of the median: on a shared,
loaded machine the minimum is the estimate least disturbed by other processes.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

from rss import reset_peak, vm_kb  # benchmarks/rss.py (the script's directory is on sys.path)

SHAPES = [(256, 256)] * 40 + [(1024, 64)] * 10 + [(4096,)] * 10

# rule → (thalweg class, keyword arguments shared by every implementation of it); torch.optim
# implements the rule when it has a class of that name
RULES: dict[str, tuple[str, dict]] = {
    "sgd": ("SGD", {"lr": 1e-3}),
    "momentum": ("SGD", {"lr": 1e-3, "momentum": 0.9}),
    "nesterov": ("SGD", {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
    "adagrad": ("Adagrad", {"lr": 1e-2}),
    "rmsprop": ("RMSprop", {"lr": 1e-3}),
    "adadelta": ("Adadelta", {"lr": 1.0}),
    "adam": ("Adam", {"lr": 1e-3}),
    "adamw": ("AdamW", {"lr": 1e-3, "weight_decay": 1e-2}),
    "nadamw": ("NAdam", {"lr": 1e-3, "weight_decay": 1e-2, "decoupled_weight_decay": True}),
    "radam": ("RAdam", {"lr": 1e-3}),
    "adamax": ("Adamax", {"lr": 2e-3}),
    "lion": ("Lion", {"lr": 1e-4, "weight_decay": 0.1}),
    "sf_adamw": ("ScheduleFreeAdamW", {"lr": 2.5e-3, "weight_decay": 1e-2}),
    "sf_sgd": ("ScheduleFreeSGD", {"lr": 0.5}),
    "prodigy": ("Prodigy", {"lr": 1.0}),
    "lamb": ("LAMB", {"lr": 1e-3, "weight_decay": 1e-2}),
    "lars": ("LARS", {"lr": 1.0, "weight_decay": 1e-4, "momentum": 0.9}),
}

Factory = Callable[[list], object]


def implementations(rule: str) -> dict[str, Factory]:
    """label → factory(params) for every implementation of `rule` that exists here."""
    import torch

    import thalweg.optim as to

    cls_name, kw = RULES[rule]
    impls: dict[str, Factory] = {  # "thalweg" is the default, compile="auto"
        "thalweg": lambda ps: getattr(to, cls_name)(ps, **kw),
        "thalweg-compiled": lambda ps: getattr(to, cls_name)(ps, compile=True, **kw),
        "thalweg-eager": lambda ps: getattr(to, cls_name)(ps, compile=False, **kw),
    }
    ref = getattr(torch.optim, cls_name, None)
    if ref is not None:
        try:
            ref([torch.nn.Parameter(torch.zeros(1))], fused=True, **kw)
            impls["torch-fused"] = lambda ps: ref(ps, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            pass
        impls["torch-foreach"] = lambda ps: ref(ps, foreach=True, **kw)
        impls["torch-forloop"] = lambda ps: ref(ps, foreach=False, **kw)
    impls.update(_peers(rule, kw))
    impls.update(_contender_peers(rule, kw))
    if LOW_PRECISION:
        impls.update(_low_precision(rule, cls_name, kw))
    return {label: _in_train_mode(f) for label, f in impls.items()}


def _in_train_mode(factory: Factory) -> Factory:
    """schedulefree's optimizers (and their ports) start in eval mode: step them in train mode."""
    def make(ps: list) -> object:
        opt = factory(ps)
        if callable(getattr(opt, "train", None)) and callable(getattr(opt, "eval", None)):
            opt.train()
        return opt

    return make


def _contender_peers(rule: str, kw: dict) -> dict[str, Factory]:
    """The reference packages and the peer libraries that implement the contenders."""
    import importlib

    def get(module: str, name: str):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            return None

    table: dict[str, list[tuple[str, str, str, dict]]] = {  # rule → (label, module, class, kwargs)
        "nadamw": [("heavyball", "heavyball", "NAdam", kw)],
        "radam": [("pytorch_optimizer", "pytorch_optimizer", "RAdam", kw),
                  ("torch_optimizer", "torch_optimizer", "RAdam", kw)],
        "adamax": [("pytorch_optimizer", "pytorch_optimizer", "AdaMax", kw)],
        "lion": [("lion-pytorch", "lion_pytorch", "Lion", kw), ("pytorch_optimizer", "pytorch_optimizer", "Lion", kw)],
        "sf_adamw": [("schedulefree", "schedulefree", "AdamWScheduleFree", kw),
                     ("schedulefree-forloop", "schedulefree", "AdamWScheduleFree", {**kw, "foreach": False}),
                     ("pytorch_optimizer", "pytorch_optimizer", "ScheduleFreeAdamW", kw),
                     ("heavyball", "heavyball", "SFAdamW", {**kw, "betas": (0.9, 0.999), "eps": 1e-8})],
        "sf_sgd": [("schedulefree", "schedulefree", "SGDScheduleFree", kw),
                   ("schedulefree-forloop", "schedulefree", "SGDScheduleFree", {**kw, "foreach": False}),
                   ("pytorch_optimizer", "pytorch_optimizer", "ScheduleFreeSGD", kw)],
        "prodigy": [("prodigyopt", "prodigyopt", "Prodigy", kw), ("pytorch_optimizer", "pytorch_optimizer", "Prodigy", kw)],
        "lamb": [("torch_optimizer", "torch_optimizer", "Lamb", kw), ("pytorch_optimizer", "pytorch_optimizer", "Lamb", kw)],
        "lars": [("pytorch_optimizer", "pytorch_optimizer", "LARS", kw), ("torch_optimizer", "torch_optimizer", "LARS", kw)],
    }
    out: dict[str, Factory] = {}
    for label, module, name, args in table.get(rule, []):
        cls = get(module, name)
        if cls is not None:
            out[label] = lambda ps, cls=cls, args=args: cls(ps, **args)
    return out


#: `--low-precision`: also time thalweg's bf16/int8 state and the 8-bit peers (docs/memory.md)
LOW_PRECISION = False
_LOW_PRECISION_LABELS = ("thalweg-bf16", "thalweg-int8", "torchao-8bit", "bnb-8bit")


def _low_precision(rule: str, cls_name: str, kw: dict) -> dict[str, Factory]:
    """thalweg with bf16 and int8 state, and the 8-bit Adam of torchao and bitsandbytes
    (both run on CPU: torchao's compiles its own kernel per parameter at the first step)."""
    import torch

    import thalweg.optim as to

    if rule == "sgd":  # plain SGD keeps no state
        return {}
    cls = getattr(to, cls_name)
    out: dict[str, Factory] = {}
    for sd in ("bf16", "int8"):
        try:  # a rule whose state is a weight copy (schedule-free's z) refuses it (docs/memory.md)
            cls([torch.nn.Parameter(torch.zeros(1))], state_dtype=sd, **kw)
        except ValueError:
            continue
        out[f"thalweg-{sd}"] = lambda ps, sd=sd: cls(ps, state_dtype=sd, **kw)
    if rule in ("adam", "adamw"):
        wd = kw.get("weight_decay", 0.0)
        try:
            import torchao.optim as tao

            out["torchao-8bit"] = lambda ps: (tao.AdamW8bit if rule == "adamw" else tao.Adam8bit)(
                ps, lr=kw["lr"], weight_decay=wd)
        except ImportError:
            pass
        try:
            import bitsandbytes as bnb

            out["bnb-8bit"] = lambda ps: (bnb.optim.AdamW8bit if rule == "adamw" else bnb.optim.Adam8bit)(
                ps, lr=kw["lr"], weight_decay=wd)
        except ImportError:
            pass
    return out


def _peers(rule: str, kw: dict) -> dict[str, Factory]:
    """Peer libraries' own implementations (re-exports of torch.optim are left out)."""
    out: dict[str, Factory] = {}
    try:
        import pytorch_optimizer as po

        if rule == "adadelta":
            out["pytorch_optimizer"] = lambda ps: po.AdaDelta(ps, **kw)
    except ImportError:
        pass
    try:
        import heavyball

        if rule in ("adam", "adamw"):
            wd = kw.get("weight_decay", 0.0)
            out["heavyball"] = lambda ps: heavyball.AdamW(ps, lr=kw["lr"], betas=(0.9, 0.999), weight_decay=wd)
        elif rule == "momentum":
            out["heavyball"] = lambda ps: heavyball.SGD(ps, lr=kw["lr"], beta=0.9)
        elif rule == "rmsprop":
            out["heavyball"] = lambda ps: heavyball.RMSprop(ps, lr=kw["lr"], betas=(0.0, 0.99), eps=1e-8)
    except ImportError:
        pass
    return out


def make_params(seed: int = 0) -> list:
    import torch

    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.02) for s in SHAPES]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    return ps


def restore_grads(pairs: list) -> None:
    for p, g in pairs:
        if p.grad is not g:
            p.grad = g


def arrive_grads(opt, pairs: list) -> None:
    """Each parameter's gradient delivered as a training loop's backward delivers it:
    `zero_grad()` (None), then autograd accumulates the stored gradient. thalweg's then lands in
    its flat buffer directly; a `p.grad = g` set by hand would be copied in at each step, a cost
    no backward-driven loop pays."""
    import torch

    opt.zero_grad(set_to_none=True)
    torch.autograd.backward([p for p, _ in pairs], [g for _, g in pairs])


def state_bytes(opt) -> int:
    """Bytes of the optimizer state as stored (thalweg's own count; the inner tensors of
    torchao's quantized tensor subclasses)."""
    import torch

    if hasattr(opt, "state_nbytes"):
        return opt.state_nbytes()

    def size(t) -> int:
        if hasattr(t, "__tensor_flatten__"):
            names, _ = t.__tensor_flatten__()
            return sum(size(getattr(t, n)) for n in names)
        return t.numel() * t.element_size()

    return sum(size(t) for st in opt.state.values() for t in st.values()
               if isinstance(t, torch.Tensor) and t.dim() > 0)


def measure_peak() -> tuple[float, float]:
    """In this (fresh) process, in MB: peak growth from creating the optimizer and taking its
    first step (state, packing, compilation), then the peak growth of 5 further steps
    (temporaries per step)."""
    rule, label = sys.argv[2], sys.argv[3]
    ps = make_params()
    factory = implementations(rule)[label]
    base = reset_peak()
    opt = factory(ps)
    pairs = [(p, p.grad) for p in ps]
    opt.step()
    first = (vm_kb("VmHWM") - base) / 1024
    base = reset_peak()
    for _ in range(5):
        restore_grads(pairs)
        opt.step()
    return first, (vm_kb("VmHWM") - base) / 1024


def peak_rss_mb(rule: str, label: str) -> tuple[float, float]:
    """(first-step, per-step) peak memory growth of an implementation, in a fresh process."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--peak-child", rule, label],
                         capture_output=True, text=True, check=True)
    first, steady = out.stdout.strip().splitlines()[-1].split()
    return float(first), float(steady)


def progress(msg: str | None) -> None:
    """One status line on stderr, rewritten in place on a terminal (None clears it); in a log,
    each set-up line and the first timing round only."""
    if not sys.stderr.isatty():
        if msg is not None and (not msg.startswith("timing") or " 1/" in msg):
            print(msg, file=sys.stderr, flush=True)
        return
    sys.stderr.write("\r\033[K" + (msg or ""))
    sys.stderr.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS per implementation")
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="per-implementation statistic over the rounds (min: for a loaded machine)")
    ap.add_argument("--low-precision", action="store_true",
                    help="also thalweg's bf16/int8 state and torchao's/bitsandbytes' 8-bit Adam")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default; 1 on a loaded machine, where idle threads wait ~10 ms per op)")
    ap.add_argument("--warm-cache", action="store_true",
                    help="reuse the inductor cache (default: a fresh one, so compile times are cold)")
    ap.add_argument("--json", default=None, help="write the figures and tables here (thalweg.record)")
    args = ap.parse_args()
    global LOW_PRECISION
    LOW_PRECISION = args.low_precision
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="thalweg-bench-inductor-")
    warnings.filterwarnings("ignore")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{sum(torch.Size(s).numel() for s in SHAPES) / 1e6:.2f} M params in {len(SHAPES)} tensors")
    rules = [r for r in args.rules.split(",") if r]
    opts: dict[tuple[str, str], object] = {}
    grads: dict[tuple[str, str], list] = {}
    first_step: dict[tuple[str, str], float] = {}
    todo = [(rule, label, factory) for rule in rules for label, factory in implementations(rule).items()]
    for i, (rule, label, factory) in enumerate(todo, 1):
        progress(f"setting up {i}/{len(todo)}: {rule} {label} (a compiled first step takes seconds)")
        ps = make_params()
        opt = factory(ps)
        grads[(rule, label)] = [(p, p.grad) for p in ps]
        t0 = time.perf_counter()
        opt.step()  # first step: compilation happens here for compiled implementations
        first_step[(rule, label)] = time.perf_counter() - t0
        opts[(rule, label)] = opt
        for _ in range(3):
            arrive_grads(opt, grads[(rule, label)])
            opt.step()
    times: dict[tuple[str, str], list[float]] = {k: [] for k in opts}
    keys = list(opts)
    for r in range(args.rounds):
        progress(f"timing: round {r + 1}/{args.rounds} of {len(keys)} implementations")
        random.shuffle(keys)
        for k in keys:
            opt = opts[k]
            arrive_grads(opt, grads[k])  # outside the timing, as a backward pass would
            t0 = time.perf_counter()
            opt.step()
            times[k].append(time.perf_counter() - t0)

    progress(None)
    stat = statistics.median if args.stat == "median" else min
    med = {k: stat(v) * 1e3 for k, v in times.items()}
    print(f"\n{args.stat} step time (ms) over {args.rounds} interleaved rounds; ratio = thalweg / theirs\n")
    header = f"{'rule':<10}{'implementation':<20}{'ms':>9}{'ratio':>9}{'1st step s':>12}{'state MB':>10}"
    if args.memory:
        header += f"{'1st-step MB':>13}{'per-step MB':>13}"
    print(header)
    print("-" * len(header))
    summary = []
    memory: dict[tuple[str, str], tuple[float, float]] = {}
    for rule in rules:
        ours = med[(rule, "thalweg")]
        torch_best = min((v for (r, lab), v in med.items() if r == rule and lab.startswith("torch-")),
                         default=float("nan"))
        for (r, label), ms in sorted(((k, v) for k, v in med.items() if k[0] == rule), key=lambda kv: kv[1]):
            line = (f"{rule:<10}{label:<20}{ms:>9.3f}{ours / ms:>9.2f}{first_step[(r, label)]:>12.2f}"
                    f"{state_bytes(opts[(r, label)]) / 2**20:>10.1f}")
            if args.memory:
                first, steady = memory[(r, label)] = peak_rss_mb(r, label)
                line += f"{first:>13.1f}{steady:>13.1f}"
            print(line)
        full = {lab: v for (r, lab), v in med.items() if r == rule and lab not in _LOW_PRECISION_LABELS}
        peers = {lab: v for lab, v in full.items() if not lab.startswith(("thalweg", "torch-"))}
        everyone = [v for lab, v in full.items() if not lab.startswith("thalweg")]
        summary.append((rule, ours / torch_best, {k: ours / v for k, v in peers.items()}, ours / min(everyone)))
        print()
    print("summary: thalweg / fastest torch.optim (target ≤ 0.70); thalweg / each peer; thalweg / fastest of all")
    for rule, r_torch, r_peers, r_all in summary:
        peers = ", ".join(f"{k} {v:.2f}" for k, v in r_peers.items()) or "no other package"
        vs_torch = "   —" if r_torch != r_torch else f"{r_torch:5.2f}"  # nan: torch.optim lacks the rule
        print(f"  {rule:<10} {vs_torch:>5}   {peers};  fastest of all {r_all:.2f}")
    if LOW_PRECISION:
        print("\nlow precision: step time / torch-fused (int8 target ≤ 0.70); state bytes / torch-fused's")
        for rule in rules:
            if (rule, "torch-fused") not in med:
                continue
            ref, ref_b = med[(rule, "torch-fused")], state_bytes(opts[(rule, "torch-fused")])
            cells = [f"{lab} {med[(r, lab)] / ref:.2f} ({state_bytes(opts[(r, lab)]) / ref_b:.2f})"
                     for (r, lab) in med if r == rule and lab in _LOW_PRECISION_LABELS]
            print(f"  {rule:<10} " + ", ".join(cells))
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.json:
        rec = record(rules, med, first_step, memory, args.rounds, args.stat, torch.get_num_threads(), opts)
        print(f"wrote {rec.write(args.json)}")


#: the README's name of a rule (default: the rule's key)
LABELS = {"sgd": "SGD", "nesterov": "Nesterov", "adagrad": "AdaGrad", "rmsprop": "RMSProp",
          "adadelta": "AdaDelta", "adam": "Adam", "adamw": "AdamW"}
_TORCH = {"torch-fused": "fused", "torch-foreach": "foreach", "torch-forloop": "for-loop"}


def _ms(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _ratio(v: float) -> str:
    return f"**{v:.2f}**" if v < 1 else f"{v:.2f}"


def record(rules: list[str], med: dict, first_step: dict, memory: dict, rounds: int, stat: str, threads: int,
           opts: dict):
    """The figures (`<rule>.<implementation>_ms`, `<rule>.torch_ratio`, `<rule>.peer_ratio`, …)
    and the tables: thalweg's default against the fastest torch.optim and the fastest peer
    package (`readme`: the seeds' rules; `contenders`: the rest), low-precision rows."""
    import torch

    from thalweg.record import Record

    rec = Record()
    rec.figure("rounds", rounds)
    rec.figure("stat", stat)
    rec.figure("threads", threads)
    rec.figure("params_m", sum(torch.Size(s).numel() for s in SHAPES) / 1e6)
    rec.figure("tensors", len(SHAPES))
    tables: dict[str, list] = {"readme": [], "contenders": []}
    low = []
    for rule in rules:
        mine = {lab: v for (r, lab), v in med.items() if r == rule}
        ours = mine["thalweg"]
        for lab, v in mine.items():
            rec.figure(f"{rule}.{lab}_ms", v)
            rec.figure(f"{rule}.{lab}_first_step_s", first_step[(rule, lab)])
        torch_cells = ["—", ""]
        timed = [(lab, v) for lab, v in mine.items() if lab in _TORCH]
        if timed:
            tlab, tms = min(timed, key=lambda kv: kv[1])
            rec.figure(f"{rule}.torch_best", _TORCH[tlab])
            rec.figure(f"{rule}.torch_ratio", ours / tms)
            rec.figure(f"{rule}.torch_speedup", tms / ours)
            for lab, v in timed:
                rec.figure(f"{rule}.{lab}_ratio", ours / v)
            torch_cells = [f"{_TORCH[tlab]} {_ms(tms)} ms", _ratio(ours / tms)]
        peers = sorted(((lab, v) for lab, v in mine.items()
                        if not lab.startswith(("thalweg", "torch-")) and lab not in _LOW_PRECISION_LABELS),
                       key=lambda kv: kv[1])
        peer = ["—", ""]
        if peers:
            plab, pms = peers[0]
            rec.figure(f"{rule}.peer_ratio", ours / pms)
            rec.figure(f"{rule}.peer", plab)
            peer = [f"{plab} {_ms(pms)} ms", _ratio(ours / pms)]
        for (r, lab), (first, steady) in memory.items():
            if r == rule:
                rec.figure(f"{rule}.{lab}_first_step_mb", first)
                rec.figure(f"{rule}.{lab}_per_step_mb", steady)
        if "torch-fused" in mine:
            ref, ref_b = mine["torch-fused"], state_bytes(opts[(rule, "torch-fused")])
            for lab in mine:
                if lab in _LOW_PRECISION_LABELS:
                    rec.figure(f"{rule}.{lab}_fused_ratio", mine[lab] / ref)
                    rec.figure(f"{rule}.{lab}_state_ratio", state_bytes(opts[(rule, lab)]) / ref_b)
                    low.append([LABELS.get(rule, rule), lab, f"{_ms(mine[lab])} ms", f"{mine[lab] / ref:.2f}",
                                f"{state_bytes(opts[(rule, lab)]) / ref_b:.2f}"])
        which = "readme" if rule in LABELS else "contenders"
        tables[which].append([LABELS.get(rule, rule), f"{_ms(ours)} ms", *torch_cells, *peer,
                              f"{_ms(mine['thalweg-eager'])} ms" if "thalweg-eager" in mine else "—"])
    head = ["rule", "thalweg (default)", "fastest torch.optim", "ratio", "fastest other package", "ratio",
            "thalweg eager"]
    for name, rows in tables.items():
        if rows:
            rec.table(name, head, rows, "lrrrrrr")
    if low:
        rec.table("low_precision", ["rule", "implementation", "step", "step / torch fused", "state / torch fused"],
                  low, "llrrr")
    return rec


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--peak-child":
        warnings.filterwarnings("ignore")
        LOW_PRECISION = True
        print(*measure_peak())
    else:
        main()
