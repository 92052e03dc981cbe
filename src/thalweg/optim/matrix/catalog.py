"""The registry entries of the per-tensor and matrix rules (adafactor, muon, shampoo, soap):
schemas, option grids for the agreement tests, and the bench's search spaces."""

from __future__ import annotations

import torch

from thalweg.optim.registry import OptimizerInfo, SearchDim

from .adafactor import Adafactor
from .muon import Muon
from .shampoo import SOAP, Shampoo

__all__ = ["INFOS"]

S = SearchDim
_B = (False, True)
_WD = S("weight_decay", 1e-6, 1e-1, log=True)

INFOS = (
    OptimizerInfo(
        name="adafactor", factory=Adafactor, hyperparameters=Adafactor.schema,
        torch_reference=torch.optim.Adafactor,
        description="factored second moment (row and column averages), relative step size "
                    "(torch.optim.Adafactor's trajectories)",
        option_grid={"beta2_decay": (-0.8, -0.5), "d": (1.0, 2.0), "weight_decay": (0.0, 0.1),
                     "maximize": _B},
        options=("eps", "foreach"),
        search_space=(S("lr", 1e-4, 1e-1, log=True), _WD),
    ),
    OptimizerInfo(
        name="muon", factory=Muon, hyperparameters=Muon.schema, accepts_named=True,
        description="orthogonalized momentum (Newton-Schulz) for hidden matrices, AdamW for the "
                    "rest (torch.optim.Muon's trajectories on 2-D parameters)",
        option_grid={"nesterov": _B, "adjust_lr_fn": (None, "match_rms_adamw"), "weight_decay": (0.0, 0.1)},
        options=("ns_coefficients", "compile"),
        default_lr=0.02,  # Keller Jordan's Muon (the constructor keeps torch.optim.Muon's 1e-3)
        search_space=(S("lr", 1e-4, 1e-1, log=True), S("momentum", 1e-2, 0.2, log=True, one_minus=True),
                      S("adamw_lr_ratio", 1e-2, 1.0, log=True), _WD),
    ),
    OptimizerInfo(
        name="shampoo", factory=Shampoo, hyperparameters=Shampoo.schema,
        description="Kronecker-factored preconditioner L^(-1/4) G R^(-1/4) per block, grafted to "
                    "Adam's (or SGD's) step norm",
        option_grid={"graft": ("adam", "sgd"), "nesterov": _B, "max_precond_dim": (1024, 4),
                     "weight_decay": (0.0, 0.1)},
        options=("compile",),
        search_space=(S("lr", 1e-4, 1e-1, log=True), S("betas", 1e-2, 0.5, log=True, index=0, one_minus=True),
                      S("shampoo_beta", 1e-3, 0.1, log=True, one_minus=True), _WD),
    ),
    OptimizerInfo(
        name="soap", factory=SOAP, hyperparameters=SOAP.schema,
        description="Adam in the eigenbasis of Shampoo's Kronecker factors",
        option_grid={"max_precond_dim": (1024, 4), "weight_decay": (0.0, 0.1)},
        options=("compile",),
        search_space=(S("lr", 1e-4, 1e-1, log=True), S("betas", 1e-2, 0.5, log=True, index=0, one_minus=True),
                      S("shampoo_beta", 1e-2, 0.2, log=True, one_minus=True), _WD),
    ),
)
