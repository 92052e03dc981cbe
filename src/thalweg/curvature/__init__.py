"""Curvature of the loss surface: Hessian-vector products, extreme eigenvalues (Lanczos), trace
(Hutchinson, Hutch++), spectral density (SLQ) and critical-point classification.

The numerics underneath (products from a gradient graph, Lanczos, probes, operators) live in
`thalweg.linalg`; `Lanczos`, `MatrixOperator`, `as_operator` and `rademacher` are re-exported."""

from thalweg.curvature.critical import (
    Classification,
    ConditionEstimate,
    SignCertificate,
    certify_min_sign,
    classify,
    condition_number,
    find_critical_point,
    minimum_odds,
)
from thalweg.curvature.density import DensityResult, density, plot_density
from thalweg.curvature.hvp import FunctionHessian, HessianOperator, hvp
from thalweg.curvature.lanczos import EigResult, eigs
from thalweg.curvature.probe import Probe, load_probe, load_target, save_probe
from thalweg.curvature.trace import TraceResult, trace
from thalweg.curvature.weight_norm import composite_weight_norm
from thalweg.linalg import Lanczos, MatrixOperator, as_operator, rademacher

__all__ = [
    "Classification",
    "ConditionEstimate",
    "DensityResult",
    "EigResult",
    "FunctionHessian",
    "HessianOperator",
    "Lanczos",
    "MatrixOperator",
    "Probe",
    "SignCertificate",
    "TraceResult",
    "as_operator",
    "certify_min_sign",
    "classify",
    "composite_weight_norm",
    "condition_number",
    "density",
    "eigs",
    "find_critical_point",
    "hvp",
    "load_probe",
    "load_target",
    "minimum_odds",
    "plot_density",
    "rademacher",
    "save_probe",
    "trace",
]
