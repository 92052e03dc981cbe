"""Update rules: first-order optimizers over flat, compiled buffers, composable transforms,
second-order methods, and the registry that lists them all.

>>> opt = thalweg.optim.Adam(model.parameters(), lr=1e-3)          # drop-in for torch.optim.Adam
>>> opt = thalweg.optim.FlatOptimizer(model.parameters(),
...     chain(clip_by_global_norm(1.0), scale_by_adam(), add_decayed_weights(1e-2), scale_by_lr(1e-3)))

Transforms are named classes (`ScaleByAdam`, in :mod:`~thalweg.optim.transforms`) built by
lowercase factories (`scale_by_adam`); see that module for how to write a new one.
"""

from thalweg.optim.engine.backward import step_in_backward
from thalweg.optim.engine.core import AUTO_COMPILE_MIN_NUMEL, FlatOptimizer, Rule
from thalweg.optim.engine.modes import eval_mode, has_modes, is_training, set_mode, train_mode
from thalweg.optim.engine.statedict import to_torch_state_dict
from thalweg.optim.matrix.adafactor import Adafactor
from thalweg.optim.matrix.muon import Muon
from thalweg.optim.matrix.shampoo import SOAP, Shampoo
from thalweg.optim.rules.contenders import (
    Adamax,
    Lion,
    NAdam,
    RAdam,
    ScheduleFreeAdamW,
    ScheduleFreeSGD,
)
from thalweg.optim.rules.large_batch import LAMB, LARS
from thalweg.optim.rules.prodigy import Prodigy
from thalweg.optim.rules.twins import SGD, Adadelta, Adagrad, Adam, AdamW, RMSprop
from thalweg.optim.second_order.adahessian import AdaHessian
from thalweg.optim.second_order.kfac import KFAC
from thalweg.optim.second_order.lbfgs import LBFGS
from thalweg.optim.second_order.newton import Newton

from . import catalog, registry  # noqa: F401 (catalog registers every optimizer thalweg ships)
from .transforms import (
    Chain,
    Hyper,
    StepContext,
    Transform,
    add_decayed_weights,
    chain,
    clip,
    clip_by_global_norm,
    decay_weights,
    flip_sign,
    scale,
    scale_by_adadelta,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_adamax,
    scale_by_bias_correction,
    scale_by_lars,
    scale_by_lion,
    scale_by_lr,
    scale_by_moments,
    scale_by_nadam,
    scale_by_radam,
    scale_by_rms,
    scale_by_second_moment,
    scale_by_trust_ratio,
    schedule_free,
    trace,
)

__all__ = [
    "AUTO_COMPILE_MIN_NUMEL",
    "KFAC",
    "LAMB",
    "LARS",
    "LBFGS",
    "SGD",
    "SOAP",
    "AdaHessian",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Chain",
    "FlatOptimizer",
    "Hyper",
    "Lion",
    "Muon",
    "NAdam",
    "Newton",
    "Prodigy",
    "RAdam",
    "RMSprop",
    "Rule",
    "ScheduleFreeAdamW",
    "ScheduleFreeSGD",
    "Shampoo",
    "StepContext",
    "Transform",
    "add_decayed_weights",
    "chain",
    "clip",
    "clip_by_global_norm",
    "decay_weights",
    "eval_mode",
    "flip_sign",
    "has_modes",
    "is_training",
    "registry",
    "scale",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_bias_correction",
    "scale_by_lars",
    "scale_by_lion",
    "scale_by_lr",
    "scale_by_moments",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_second_moment",
    "scale_by_trust_ratio",
    "schedule_free",
    "set_mode",
    "step_in_backward",
    "to_torch_state_dict",
    "trace",
    "train_mode",
]
