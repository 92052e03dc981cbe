"""Meta-learning as two-level optimization on `torch.func`: MAML (second order), first-order
MAML, Reptile, Meta-SGD's learned inner step sizes, and offline task distributions.

>>> learner = MAML(model, "mse", inner_steps=1, inner_lr=0.01)
>>> opt = thalweg.optim.registry.create("adam", learner.parameters(), lr=1e-3)
>>> for i in range(1000):
...     opt.zero_grad(); learner.meta_backward(tasks.sample(25, seed=i)); opt.step()

A library area: its learners, inner optimizers and tasks never import `thalweg.train`; the
`thalweg meta` run (`meta.config`, `meta.run`, `meta.report`, `meta.commands`) is the CLI
layer's, in this folder: it runs on the trainer's config sections and run directory.
"""

from thalweg.meta.inner import InnerChain, InnerOptimizer, InnerSGD, inner_optimizer
from thalweg.meta.learners import (
    FOMAML,
    MAML,
    MetaLearner,
    Pretrained,
    Reptile,
    accuracy,
    adaptation_table,
    loss_function,
)
from thalweg.meta.tasks import (
    Episode,
    FewShot,
    MetaError,
    Sinusoid,
    TaskDistribution,
    augment_classes,
    episode_seed,
    fewshot_distributions,
)

__all__ = [
    "FOMAML",
    "MAML",
    "Episode",
    "FewShot",
    "InnerChain",
    "InnerOptimizer",
    "InnerSGD",
    "MetaError",
    "MetaLearner",
    "Pretrained",
    "Reptile",
    "Sinusoid",
    "TaskDistribution",
    "accuracy",
    "adaptation_table",
    "augment_classes",
    "episode_seed",
    "fewshot_distributions",
    "inner_optimizer",
    "loss_function",
]
