"""The registry entries of the elementwise and per-tensor contenders (nadam, radam, adamax, lion,
schedulefree_adamw, schedulefree_sgd, prodigy, lamb, lars): schemas, option grids for the
agreement tests, references, and the bench's default search spaces."""

from __future__ import annotations

import torch

from thalweg.optim.registry import OptimizerInfo, SearchDim

from .contenders import Adamax, Lion, NAdam, RAdam, ScheduleFreeAdamW, ScheduleFreeSGD
from .large_batch import LAMB, LARS
from .prodigy import Prodigy

__all__ = ["INFOS"]

S = SearchDim
_B = (False, True)
_WD = S("weight_decay", 1e-6, 1e-1, log=True)
_B1 = S("betas", 1e-2, 0.5, log=True, index=0, one_minus=True)
_COMPILE = ("compile", "compile_options")
_TORCH = (*_COMPILE, "foreach", "capturable", "differentiable")

INFOS = (
    OptimizerInfo(
        name="nadam", factory=NAdam, hyperparameters=NAdam.schema, torch_reference=torch.optim.NAdam,
        description="Adam with Nesterov momentum (decoupled decay: NAdamW, AlgoPerf's baseline)",
        option_grid={"weight_decay": (0.0, 0.1), "decoupled_weight_decay": _B, "maximize": _B},
        options=_TORCH, search_space=(S("lr", 1e-5, 1e-1, log=True), _B1, _WD),
    ),
    OptimizerInfo(
        name="radam", factory=RAdam, hyperparameters=RAdam.schema, torch_reference=torch.optim.RAdam,
        description="Adam with its adaptive rate's variance rectified (no warm-up needed)",
        option_grid={"weight_decay": (0.0, 0.1), "decoupled_weight_decay": _B, "maximize": _B},
        options=_TORCH, search_space=(S("lr", 1e-5, 1e-1, log=True), _B1, _WD),
    ),
    OptimizerInfo(
        name="adamax", factory=Adamax, hyperparameters=Adamax.schema, torch_reference=torch.optim.Adamax,
        description="Adam with the infinity norm for the second moment",
        option_grid={"weight_decay": (0.0, 0.1), "maximize": _B},
        options=_TORCH, search_space=(S("lr", 1e-4, 1e-1, log=True), _B1, _WD),
    ),
    OptimizerInfo(
        name="lion", factory=Lion, hyperparameters=Lion.schema, reference="lion_pytorch:Lion",
        description="sign of interpolated momentum: equal-size steps, one state buffer",
        option_grid={"weight_decay": (0.0, 0.1), "decoupled_weight_decay": _B},
        options=_COMPILE,
        search_space=(S("lr", 1e-6, 1e-2, log=True), _B1, S("weight_decay", 1e-4, 1.0, log=True)),
    ),
    OptimizerInfo(
        name="schedulefree_adamw", factory=ScheduleFreeAdamW, hyperparameters=ScheduleFreeAdamW.schema,
        reference="schedulefree:AdamWScheduleFree",
        description="Schedule-Free AdamW: an online average instead of a schedule (train()/eval() modes)",
        option_grid={"weight_decay": (0.0, 0.1), "warmup_steps": (0, 10), "r": (0.0, 1.0)},
        options=(*_COMPILE, "foreach"), aliases={"sf_adamw": {}},
        search_space=(S("lr", 1e-4, 1e-1, log=True), _B1, _WD),
    ),
    OptimizerInfo(
        name="schedulefree_sgd", factory=ScheduleFreeSGD, hyperparameters=ScheduleFreeSGD.schema,
        reference="schedulefree:SGDScheduleFree",
        description="Schedule-Free SGD: averaged momentum-free SGD (train()/eval() modes)",
        option_grid={"weight_decay": (0.0, 0.1), "warmup_steps": (0, 10), "r": (0.0, 1.0)},
        options=(*_COMPILE, "foreach"), aliases={"sf_sgd": {}},
        search_space=(S("lr", 1e-2, 10.0, log=True), S("momentum", 1e-2, 0.5, log=True, one_minus=True), _WD),
    ),
    OptimizerInfo(
        name="prodigy", factory=Prodigy, hyperparameters=Prodigy.schema, reference="prodigyopt:Prodigy",
        description="learning-rate-free Adam: the step scale d estimated from a global reduction",
        option_grid={"weight_decay": (0.0, 0.1), "decouple": _B, "use_bias_correction": _B,
                     "safeguard_warmup": _B},
        options=_COMPILE,
        search_space=(S("lr", 0.1, 10.0, log=True), S("d_coef", 0.1, 10.0, log=True), _WD),
    ),
    OptimizerInfo(
        name="lamb", factory=LAMB, hyperparameters=LAMB.schema, reference="torch_optimizer:Lamb",
        description="Adam's direction rescaled per tensor by ‖θ‖/‖direction‖ (large batches)",
        option_grid={"weight_decay": (0.0, 0.1), "debias": _B},
        options=_COMPILE, search_space=(S("lr", 1e-4, 1e-1, log=True), _B1, _WD),
    ),
    OptimizerInfo(
        name="lars", factory=LARS, hyperparameters=LARS.schema, reference="pytorch_optimizer:LARS",
        description="momentum SGD with per-tensor rates η‖θ‖/(‖g‖ + λ‖θ‖) (large batches)",
        option_grid={"weight_decay": (0.0, 0.1), "momentum": (0.0, 0.9), "nesterov": _B, "maximize": _B},
        options=_COMPILE,
        # the per-tensor trust ratio (0.001 by default) scales the step: runs want lr ~1–15 (the
        # bench's MNIST-1D sweep peaks near 2; examples/mnist1d_lars.toml uses 15 at batch 1024)
        default_lr=1.0,
        search_space=(S("lr", 1e-2, 30.0, log=True), S("momentum", 1e-2, 0.5, log=True, one_minus=True),
                      S("trust_coefficient", 1e-4, 1e-1, log=True), S("weight_decay", 1e-6, 1e-2, log=True)),
    ),
)
