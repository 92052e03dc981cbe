"""The doctor: from everything a run has — learning curves, monitors, curvature, data and
config — to a ranked differential diagnosis, each finding with evidence, a confidence and a
config change to try; treatments and their before/after verification.

`diagnose(measurements)` reads one `Monitor.measure()` dict (plus curvature / lr keys);
`diagnose_run(RunEvidence)` reads a whole run. Gathering the evidence from a run directory,
writing treated.toml and training it for verification are the CLI layer's, in this folder
(`thalweg.diagnose.examine`, `thalweg.diagnose.commands`: they wire the trainer in); nothing
else here imports `thalweg.train`.
"""

from thalweg.diagnose.curves import Curves, read_curves, surviving
from thalweg.diagnose.data import DataStats, data_findings, data_statistics
from thalweg.diagnose.findings import (
    CAUSES,
    Finding,
    Thresholds,
    describe_fix,
    format_findings,
    rank,
    to_json,
)
from thalweg.diagnose.html import to_html, write_html_section
from thalweg.diagnose.measurements import diagnose
from thalweg.diagnose.run import LR_CODES, RunEvidence, diagnose_run
from thalweg.diagnose.treat import Verification, apply_fix, choose_treatment, compare
from thalweg.diagnose.weights import (
    WeightReport,
    config_findings,
    unit_spread,
    weight_changes,
    weight_findings,
)

__all__ = [
    "CAUSES",
    "LR_CODES",
    "Curves",
    "DataStats",
    "Finding",
    "RunEvidence",
    "Thresholds",
    "Verification",
    "WeightReport",
    "apply_fix",
    "choose_treatment",
    "compare",
    "config_findings",
    "data_findings",
    "data_statistics",
    "describe_fix",
    "diagnose",
    "diagnose_run",
    "format_findings",
    "rank",
    "read_curves",
    "surviving",
    "to_html",
    "to_json",
    "unit_spread",
    "weight_changes",
    "weight_findings",
    "write_html_section",
]
