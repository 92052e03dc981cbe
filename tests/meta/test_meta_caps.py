"""`thalweg meta` estimates before it starts and caps what cannot fit: a run of 10**12
meta-updates, 10**9 adaptation steps, a meta-batch or validation set of 10**9 tasks, a
negative seed — each refused in seconds with one message naming the field (exit 2), never a
silent hang or an allocation traceback; a run that fits says what it will cost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def meta(tmp_path: Path, section: str, field: str, value: int) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'name = "m"\nout_dir = "{tmp_path / "runs"}"\n[{section}]\n{field} = {value}\n')
    return subprocess.run([sys.executable, "-m", "thalweg.cli", "meta", str(cfg)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("field", "value", "says"), [
    ("iterations", 10**12, "less than or equal to 1000000000"),
    ("adapt_steps", 10**9, "TB of memory, but the cpu device has"),
    ("meta_batch", 10**9, "TB of memory, but the cpu device has"),
    ("val_tasks", 10**9, "GB of memory, but the cpu device has"),
    ("seed", -1, "greater than or equal to 0"),
])
def test_what_cannot_fit_is_refused_naming_the_field(tmp_path: Path, field: str, value: int, says: str) -> None:
    p = meta(tmp_path, "meta", field, value)
    assert p.returncode == 2, p.stderr[-2000:]
    assert f"[meta] {field} = {value}: " in p.stderr and says in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "runs" / "m").exists()  # refused before the run directory was made


def test_a_run_that_fits_says_what_it_will_cost(tmp_path: Path) -> None:
    from thalweg.meta.budget import check, describe, estimate
    from thalweg.meta.config import build_tasks, load_meta_config, make_learner

    cfg = load_meta_config(None, {"meta.iterations": 10**8})
    tasks = build_tasks(cfg)
    import torch

    costs = estimate(cfg, tasks, make_learner(cfg, "maml", tasks).model, torch.device("cpu"))
    assert check(costs, torch.device("cpu")) is None
    assert "of memory, at least" in describe(costs) and " h of compute" in describe(costs)
    # the field named is the one the largest cost grows with
    cfg = load_meta_config(None, {"meta.iterations": 10**9, "meta.meta_batch": 10**4})
    refused = check(estimate(cfg, tasks, make_learner(cfg, "maml", tasks).model, torch.device("cpu")),
                    torch.device("cpu"))
    assert refused is not None and refused[:2] == ("meta", "iterations") and "would take at least" in refused[2]
    cfg = load_meta_config(None, {"overrides.reptile.iterations": 10**9, "meta.meta_batch": 10**4})
    refused = check(estimate(cfg, tasks, make_learner(cfg, "maml", tasks).model, torch.device("cpu")),
                    torch.device("cpu"))
    assert refused is not None and refused[:2] == ("overrides.reptile", "iterations")
