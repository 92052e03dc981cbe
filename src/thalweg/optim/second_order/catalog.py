"""The registry entries of the second-order optimizers (newton, lbfgs, kfac, adahessian).

Registered by :mod:`thalweg.optim.catalog`; the schemas here drive the trainer's
config validation, the CLI's ``optimizers`` listing and the benchmarks.
"""

from __future__ import annotations

import math

import torch

from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.registry import OptimizerInfo, SearchDim
from thalweg.optim.second_order.adahessian import AdaHessian
from thalweg.optim.second_order.kfac import KFAC
from thalweg.optim.second_order.lbfgs import LBFGS
from thalweg.optim.second_order.newton import Newton

__all__ = ["INFOS"]

INF = math.inf

NEWTON = OptimizerInfo(
    name="newton",
    factory=Newton,
    description=(
        "Newton's method, damped (H+λI) or saddle-free (|H|+λI), exact Hessian up to "
        "max_exact parameters, CG/Lanczos with HVPs above; Armijo line search."
    ),
    order="second",
    needs_closure=True,
    hyperparameters=(
        H("lr", 1.0, low=0.0, low_inclusive=False, help="initial step of the line search"),
        H("damping", 0.0, low=0.0, help="λ added to the (absolute) Hessian eigenvalues"),
        H("mode", "damped", kind="choice", choices=("damped", "saddle_free"),
          help="saddle_free uses |H| so it never walks towards a saddle or maximum"),
        H("solver", "auto", kind="choice", choices=("auto", "exact", "krylov"),
          help="auto: exact when n <= max_exact, else Krylov (CG / Lanczos)"),
        H("max_exact", 2048, kind="int", low=1, help="largest n for the dense Hessian"),
        H("krylov_iters", 50, kind="int", low=1, help="CG iterations / Lanczos steps (HVPs)"),
        H("cg_tol", 1e-8, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False,
          help="relative residual at which CG stops"),
        H("line_search", True, kind="bool", help="Armijo backtracking from lr"),
        H("armijo_c", 1e-4, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False,
          help="sufficient-decrease constant"),
        H("backtrack", 0.5, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False,
          help="step shrink factor per backtrack"),
        H("max_backtracks", 30, kind="int", low=0, help="forward evaluations per line search"),
    ),
    search_space=(SearchDim("damping", 1e-6, 1.0, log=True),),
)

LBFGS_INFO = OptimizerInfo(
    name="lbfgs",
    factory=LBFGS,
    description="L-BFGS (torch.optim.LBFGS) with a strong-Wolfe line search by default.",
    order="second",
    needs_closure=True,
    torch_reference=torch.optim.LBFGS,
    hyperparameters=(
        H("lr", 1.0, low=0.0, low_inclusive=False, help="step scale (1 with a line search)"),
        H("max_iter", 20, kind="int", low=1, help="iterations per step()"),
        H("max_eval", None, kind="int", low=1, help="closure evaluations per step (None: max(1.25·max_iter, max_iter + 5))"),
        H("tolerance_grad", 1e-7, low=0.0, help="stop when max |g| falls below"),
        H("tolerance_change", 1e-9, low=0.0, help="stop when the step or loss change falls below"),
        H("history_size", 100, kind="int", low=1, help="curvature pairs kept"),
        H("line_search_fn", "strong_wolfe", kind="choice", choices=("strong_wolfe", None),
          help="None: fixed step lr"),
    ),
    search_space=(SearchDim("history_size", 5, 100, kind="int", log=True),),
)

KFAC_INFO = OptimizerInfo(
    name="kfac",
    factory=KFAC,
    description=(
        "K-FAC: Kronecker-factored natural gradient for Linear/Conv1d/Conv2d layers, "
        "KL-clipped momentum SGD step; other parameters use momentum SGD."
    ),
    order="second",
    needs_model=True,
    hyperparameters=(
        H("lr", 0.05, low=0.0, low_inclusive=False, schedulable=False, help="learning rate"),
        H("damping", 1e-3, low=0.0, low_inclusive=False, help="Tikhonov damping of A⊗G"),
        H("factor_decay", 0.95, low=0.0, high=1.0, high_inclusive=False,
          help="running-average decay of the factors"),
        H("factor_update_every", 1, kind="int", low=1, help="steps between factor updates"),
        H("inverse_update_every", 10, kind="int", low=1, help="steps between inversions"),
        H("kl_clip", 1e-3, low=0.0, help="bound on the predicted KL change (0: off)"),
        H("momentum", 0.9, low=0.0, high=1.0, high_inclusive=False, help="heavy-ball momentum"),
        H("weight_decay", 0.0, low=0.0, help="L2 added to the preconditioned step"),
        H("inverse", "eigen", kind="choice", choices=("eigen", "cholesky"),
          help="eigen: exact damping of A⊗G; cholesky: factored Tikhonov damping"),
    ),
    search_space=(SearchDim("lr", 1e-3, 1.0, log=True), SearchDim("damping", 1e-5, 1e-1, log=True)),
)

ADAHESSIAN = OptimizerInfo(
    name="adahessian",
    factory=AdaHessian,
    description="AdaHessian: Adam with a Hutchinson Hessian-diagonal second moment.",
    order="second",
    needs_closure=True,
    hyperparameters=(
        H("lr", 0.15, low=0.0, low_inclusive=False, help="learning rate"),
        H("betas", (0.9, 0.999), kind="betas", low=0.0, high=1.0, high_inclusive=False,
          help="moment decays"),
        H("eps", 1e-4, low=0.0, low_inclusive=False, help="added to the denominator"),
        H("weight_decay", 0.0, low=0.0, help="decoupled weight decay"),
        H("hessian_power", 1.0, low=0.0, high=1.0, help="k in (√v̂)^k; 1: Newton-like, 0: SGD"),
        H("update_every", 1, kind="int", low=1, help="steps between Hessian-diagonal refreshes"),
        H("n_samples", 1, kind="int", low=1, help="Rademacher probes per refresh"),
        H("seed", 0, kind="int", low=0, help="seed of the probe generator"),
    ),
    search_space=(SearchDim("lr", 1e-3, 1.0, log=True), SearchDim("betas", 1e-2, 0.5, log=True, index=0, one_minus=True)),
)

INFOS = (NEWTON, LBFGS_INFO, KFAC_INFO, ADAHESSIAN)
