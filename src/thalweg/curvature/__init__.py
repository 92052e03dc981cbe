"""Curvature of the loss surface: Hessian-vector products, extreme eigenvalues (Lanczos), trace
(Hutchinson, Hutch++), spectral density (SLQ) and critical-point classification."""

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
from thalweg.curvature.hvp import (
    HessianOperator,
    MatrixOperator,
    as_operator,
    composite_weight_norm,
    hvp,
    rademacher,
)
from thalweg.curvature.lanczos import EigResult, Lanczos, eigs
from thalweg.curvature.probe import Probe, load_probe, load_target, save_probe
from thalweg.curvature.trace import TraceResult, trace

__all__ = [
    "Classification",
    "ConditionEstimate",
    "DensityResult",
    "EigResult",
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
