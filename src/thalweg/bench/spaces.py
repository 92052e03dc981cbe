"""The bench's search spaces, reviewed rule by rule (issue 23): the learning-rate range of each
rule spans the good values of every workload (toy problems included: Adam needs 0.2–1 on
Rosenbrock and linear regression) with room on both sides, so that a tuned value at the edge
of its range is the exception the report flags, not the rule — and no wider: a study has five
trials, and every decade of lr nobody needs lowers the odds that one of them lands where the
rule works (four decades for most rules). 1 − β₁ and 1 − momentum are log-uniform as AlgoPerf
samples them; weight decay is log-uniform where the rule has one.

A rule not listed here searches its registry entry's `search_space`. `FIXED` holds the values
the bench always sets, as the rule's paper does (LAMB leaves biases and norm gains out of its
trust ratio and its decay); `NOTES` says why, per rule, and is printed in docs/bench.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from thalweg.optim.registry import SearchDim as S

__all__ = ["FIXED", "NOTES", "SPACES", "at_edge"]

_B1 = S("betas", 1e-2, 0.5, log=True, index=0, one_minus=True)  # β₁ ∈ [0.5, 0.99]
_MOM = S("momentum", 1e-2, 0.5, log=True, one_minus=True)  # momentum ∈ [0.5, 0.99]
_WD = S("weight_decay", 1e-6, 1e-1, log=True)


def _lr(low: float, high: float) -> S:
    return S("lr", low, high, log=True)


SPACES: dict[str, tuple[S, ...]] = {
    "sgd": (_lr(1e-3, 10.0), _MOM, _WD),
    "adagrad": (_lr(1e-3, 3.0), _WD),
    "rmsprop": (_lr(1e-4, 1.0), S("alpha", 1e-3, 0.1, log=True, one_minus=True), _WD),
    "adadelta": (_lr(1e-2, 30.0), S("rho", 1e-3, 0.5, log=True, one_minus=True), _WD),
    "adam": (_lr(1e-4, 1.0), _B1, _WD),
    "adamw": (_lr(1e-4, 1.0), _B1, _WD),
    "nadam": (_lr(1e-4, 1.0), _B1, _WD),
    "radam": (_lr(1e-4, 1.0), _B1, _WD),
    "adamax": (_lr(1e-4, 1.0), _B1, _WD),
    "lion": (_lr(1e-5, 0.1), _B1, S("weight_decay", 1e-4, 1.0, log=True)),
    "adafactor": (_lr(1e-4, 1.0), _WD),
    "muon": (_lr(1e-3, 1.0), S("momentum", 1e-2, 0.2, log=True, one_minus=True), _WD),
    "shampoo": (_lr(1e-4, 1.0), _B1, S("shampoo_beta", 1e-3, 0.1, log=True, one_minus=True), _WD),
    "soap": (_lr(1e-4, 1.0), _B1, S("shampoo_beta", 1e-2, 0.2, log=True, one_minus=True), _WD),
    "schedulefree_adamw": (_lr(1e-4, 1.0), _B1, _WD),
    "schedulefree_sgd": (_lr(1e-2, 100.0), _MOM, _WD),
    "prodigy": (_lr(0.1, 10.0), S("d_coef", 0.1, 10.0, log=True), _WD),
    "lamb": (_lr(1e-4, 1.0), _B1, _WD),
    "lars": (_lr(1e-3, 30.0), _MOM, S("trust_coefficient", 1e-4, 0.1, log=True),
             S("weight_decay", 1e-6, 1e-2, log=True)),
}  # fmt: skip

FIXED: dict[str, dict[str, Any]] = {
    "lamb": {"exclude_vectors": True},
}

NOTES: dict[str, str] = {
    "sgd": "heavy ball (momentum searched); lr 1e-3–10",
    "adam": "lr up to 1: Rosenbrock and linear regression need 0.2–1 (was capped at 0.1)",
    "adamw": "as AlgoPerf's AdamW baseline: lr, 1 − β₁, decoupled decay, warm-up",
    "nadam": "coupled L2 (torch's NAdam); `nadamw` is the decoupled one (AlgoPerf's NAdamW)",
    "radam": "lr up to 1: its best digits lr was 0.3 (was capped at 0.1)",
    "lion": "lr 3–10× below AdamW's and decay 3–10× above, as the Lion paper advises",
    "muon": "the model is passed (names): embeddings and the head stay on AdamW, as in `thalweg train`, "
            "at Muon's lr (adamw_lr_ratio 1, the default: searched over [0.01, 1] it left the head "
            "at a hundredth of the lr in most draws, and the quick suite's seed-1 run never reached "
            "the digits target that lr 0.01–0.03 reaches by hand)",
    "schedulefree_adamw": "constant lr after the warm-up (no decay: the rule is its own schedule); "
                          "evaluated at the averaged weights x",
    "schedulefree_sgd": "constant lr after the warm-up; evaluated at x; lr up to 100",
    "prodigy": "lr is a multiplier of the estimated step size (1 = the paper's default)",
    "lamb": "biases and norm gains excluded from the trust ratio and the decay (the paper's BERT setup)",
    "lars": "vectors excluded from adaptation and decay (the paper's); they take lr itself, "
            "so lr goes down to 1e-3 and η is searched",
}  # fmt: skip


def at_edge(params: Mapping[str, Any], space: Sequence[Mapping[str, Any]], margin: float = 0.05) -> list[str]:
    """The searched values in `params` within `margin` of their range's edge (on the log scale
    where the dimension is log-uniform), as "param=value (low|high edge)": a range that may be
    too narrow there. `space` is a submission's described space (`Dim.to_dict()`s)."""
    out = []
    for d in space:
        name, lo, hi = d.get("param"), d.get("low"), d.get("high")
        v = params.get(name) if name else None
        if d.get("kind") == "choice" or lo is None or hi is None or not isinstance(v, int | float) or isinstance(v, bool):
            continue
        x, a, b = float(v), float(lo), float(hi)
        if d.get("log") and a > 0 and x > 0:
            x, a, b = math.log(x), math.log(a), math.log(b)
        pos = (x - a) / (b - a) if b > a else 0.5
        if pos <= margin or pos >= 1 - margin:
            out.append(f"{name}={v:.3g} ({'low' if pos <= margin else 'high'} edge)")
    return out
