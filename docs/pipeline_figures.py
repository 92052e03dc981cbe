"""docs/pipeline.md's pictures: the schedule zoo, seed 000's decays, and the signal variance
through depth of good and badly scaled initializations (tanh and ReLU, width 256, 30 layers).

    .venv/bin/python docs/pipeline_figures.py DIR [--json PATH]

writes DIR/schedule_zoo.png, DIR/schedule_seed.png and DIR/init_depth_variance.png; `--json`
also the figures docs/pipeline.md quotes (thalweg.record).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from thalweg import schedules as S
from thalweg.init import activation_variance, initialize
from thalweg.models import MLP
from thalweg.record import Record

INITS = [  # label, scheme, gain from the activation?, line style, colour
    ("Xavier/Kaiming with the activation's gain", "kaiming_normal", True, "-", "#1f5fa8"),
    ("orthogonal × gain (dashed)", "orthogonal", True, "--", "#2ca02c"),
    ("Xavier, gain 1", "xavier_normal", False, "-", "#ff7f0e"),
    ("N(0, 0.01²)", "normal_0.01", False, "-", "grey"),
    ("N(0, 1)", "normal_1", False, "-", "#d62728"),
]


def schedules(folder: Path) -> None:
    S.plot({"warm-up + cosine": S.warmup(S.cosine(0.1, total_steps=900, final=1e-3), warmup_steps=100),
            "SGDR (period 100, ×2)": S.warm_restarts(0.1, 100, mult=2, final=1e-3),
            "one-cycle": S.one_cycle(0.1, total_steps=1000),
            "warmup–stable–decay": S.warmup_stable_decay(0.1, 1000, 50, 200, decay="sqrt")},
           1000, folder / "schedule_zoo.png")
    S.plot({"piecewise constant": S.piecewise_constant((300, 600), (0.1, 0.03, 0.01)),
            "exponential η₀e^(−λt), λ=0.003": S.exponential(0.1, 0.003),
            "polynomial η₀(βt+1)^(−α), β=0.05, α=0.5": S.polynomial(0.1, 0.05, 0.5)},
           1000, folder / "schedule_seed.png")


def variances(act: str, scheme: str, with_gain: bool, x: torch.Tensor) -> list[float]:
    """Pre-activation variance at each of 30 hidden layers of a width-256 MLP."""
    torch.manual_seed(0)
    net = MLP(256, 10, width=256, depth=30, activation=act)
    if scheme.startswith("normal_"):
        initialize(net, "normal", std=float(scheme.split("_")[1]))
    elif scheme == "kaiming_normal" and act == "tanh":
        initialize(net, "xavier_normal", nonlinearity="tanh")
    else:
        initialize(net, scheme, nonlinearity=act if with_gain else None)
    with torch.no_grad():
        return [v for _, v in activation_variance(net, x)][:30]


def init_figure(folder: Path, rec: Record) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = torch.randn(512, 256, generator=torch.Generator().manual_seed(0))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3), sharey=True)
    for ax, act in zip(axes, ("tanh", "relu"), strict=True):
        for label, scheme, with_gain, style, colour in INITS:
            v = variances(act, scheme, with_gain, x)
            layers = range(1, len(v) + 1)
            ax.semilogy(layers, [min(max(a, 1e-300), 1e300) if math.isfinite(a) else float("nan") for a in v],
                        style, color=colour, lw=1.8, label=label)
            if scheme == "kaiming_normal" and act == "relu":
                rec.figure("relu.kaiming.min", min(v))
                rec.figure("relu.kaiming.max", max(v))
            if scheme == "normal_0.01" and act == "relu":
                rec.figure("relu.normal_0.01.layer20", v[19])
            if scheme == "normal_1" and act == "relu":
                bad = [i + 1 for i, a in enumerate(v) if not math.isfinite(a)]
                rec.figure("relu.normal_1.first_inf_layer", bad[0] if bad else 0)
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set_ylim(1e-40, 1e40)
        ax.set_title(f"{act} network, width 256")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("pre-activation variance")
    axes[0].annotate("N(0, 1): tanh saturates\n(|h|≫1, gradients vanish)", xy=(12, 10.0), xytext=(8, 1e22),
                     fontsize=8, arrowprops={"arrowstyle": "->"})
    axes[1].annotate("N(0, 1): explodes", xy=(14, 1e25), xytext=(17, 1e12), fontsize=8,
                     arrowprops={"arrowstyle": "->"})
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("Signal variance through depth: the right init keeps it O(1)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(folder / "init_depth_variance.png", dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    a.folder.mkdir(parents=True, exist_ok=True)
    rec = Record()
    schedules(a.folder)
    init_figure(a.folder, rec)
    print(f"wrote {a.folder}/schedule_zoo.png, schedule_seed.png, init_depth_variance.png")
    if a.json:
        print(f"wrote {rec.write(a.json)}")


if __name__ == "__main__":
    main()
