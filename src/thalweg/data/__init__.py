"""Data for training runs: offline datasets split three ways, input standardization,
resumable seeded loaders, and the gradient noise scale that says how big a batch should be."""

from .datasets import DATASETS, digits, ill_conditioned, linreg_toy, load_dataset, mnist1d
from .files import load_csv, load_npz
from .loader import Loader
from .noise import NoiseScale, gradient_noise_scale
from .splits import Splits, random_split_indices, standardize

__all__ = [
    "DATASETS",
    "Loader",
    "NoiseScale",
    "Splits",
    "digits",
    "gradient_noise_scale",
    "ill_conditioned",
    "linreg_toy",
    "load_csv",
    "load_dataset",
    "load_npz",
    "mnist1d",
    "random_split_indices",
    "standardize",
]
