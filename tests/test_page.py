"""Every HTML page thalweg writes escapes what it did not write itself (`thalweg.page`): a
hostile string in a run's config, a metric a user logged, a finding, a meta summary, a
bench's results.jsonl or `inspect`'s numbers is text on the page, never markup."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from thalweg.cli import app
from thalweg.page import Markup, document, html, table

HOSTILE = '<script>alert("x")</script>'
SAFE = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"


def assert_escaped(page: str) -> None:
    assert HOSTILE not in page and "<script" not in page, page[:2000]
    assert SAFE in page


def test_the_helpers_escape_every_value_and_keep_their_own_markup():
    assert html("<b>{}</b>", HOSTILE) == f"<b>{SAFE}</b>"
    assert html("<b>{}</b>", Markup("<i>ours</i>")) == "<b><i>ours</i></b>"
    assert table([HOSTILE], [[HOSTILE, 1.5]]) == (f"<table><tr><th>{SAFE}</th></tr><tr><td>{SAFE}</td>"
                                                  "<td>1.5</td></tr></table>")
    doc = document(HOSTILE, [HOSTILE, Markup("<p>ours</p>")])
    assert_escaped(doc)
    assert doc.count(SAFE) == 3 and "<p>ours</p>" in doc


def test_train_report(tmp_path: Path):
    """The run report: the resolved config shows the data file's name, a user's path."""
    from thalweg.train import fit

    bad_name = tmp_path / 'd<img src=x onerror=alert("x")>.csv'
    rows = ["a,b,label"] + [f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(60)]
    bad_name.write_text("\n".join(rows) + "\n")
    res = fit({"name": "r", "out_dir": str(tmp_path / "runs"),
               "data": {"name": "csv", "options": {"path": str(bad_name)}},
               "model": {"name": "mlp", "width": 8, "depth": 1}, "train": {"epochs": 1, "batch_size": 16},
               "diagnostics": {"figures": False}}, quiet=True)
    page = (res.run_dir / "report.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(" in page


def test_watch_report(tmp_path: Path):
    """`watch()`'s report: the metrics are whatever the user's loop logged."""
    import thalweg

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    w = thalweg.watch(model, opt, out_dir=tmp_path / "w", every=2, tensorboard=False, name=HOSTILE)
    for step in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        w.step(loss)
        opt.step()
        w.log({HOSTILE: 1.0, "note": HOSTILE}, step=step)
    rep = w.report()
    assert_escaped(Path(rep.report).read_text())


def test_doctor_page(tmp_path: Path):
    """The doctor's section (and the page it makes when there is none): a finding's evidence
    quotes data — a CSV column name, a layer name."""
    from thalweg.diagnose import Finding, to_html, write_html_section

    f = Finding(code="dead_units", title=f"dead units in {HOSTILE}", severity="warning", confidence=0.9,
                evidence={"layer": HOSTILE}, action=f"lower the lr of {HOSTILE}")
    page = write_html_section(tmp_path / "report.html", to_html([f], note=HOSTILE, title=HOSTILE)).read_text()
    assert_escaped(page)


def test_meta_report(tmp_path: Path):
    from thalweg.meta.plots import write_report

    summary = {"adaptation": {HOSTILE: {"steps": [0, 1], "mean": [1.0, 0.5], "ci95": [0.1, 0.1]}},
               "metric": HOSTILE, "test_tasks": 3, "best": {"note": HOSTILE}}
    page = write_report(tmp_path / "report.html", HOSTILE, summary, [], f'name = "{HOSTILE}"').read_text()
    assert_escaped(page)


def test_inspect_section(tmp_path: Path):
    from thalweg.curvature.commands import _write_report_section

    eig = {"eigenvalues": [1.0], "residuals": [0.0], "converged": [True]}
    r = {"top": eig, "bottom": eig, "trace": {"estimate": 1.0, "stderr": 0.1, "num_hvps": 3},
         "classification": {"kind": "minimum", "reasons": [HOSTILE]}, "source": HOSTILE, "num_params": 3,
         "num_samples": 4, "mode": "full", "loss": 0.5, "loss_label": HOSTILE, "grad_norm": 0.1,
         "min_sign": {"certificate": HOSTILE, "num_hvps": 2, "stopped_early": False}, "total_hvps": 5,
         "seconds": 0.1}
    page = _write_report_section(tmp_path, r).read_text()
    assert_escaped(page)


# ----- the bench report: hostile and malformed results.jsonl, bench.json --------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from thalweg.bench.api import run_bench
    from thalweg.bench.suites import BenchConfig

    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig.model_validate({"name": "b", "workloads": ["linreg"], "optimizers": ["sgd"], "trials": 2,
                                      "studies": 1, "confirm_seeds": 0, "seeds": 0, "sensitivity_points": 0,
                                      "targets": {"linreg": 1e-2}, "budgets": {"linreg": {"steps": 50}}})
    run_bench(cfg, out_dir=out, workers=0, quiet=True, report=False)
    return out / "b"


def _edit(bench: Path, tmp_path: Path, fn) -> Path:
    root = tmp_path / "b"
    shutil.copytree(bench, root)
    recs = [json.loads(x) for x in (root / "results.jsonl").read_text().splitlines()]
    text = fn(recs, root)
    if text is not None:
        (root / "results.jsonl").write_text(text)
    return root


def _dump(recs) -> str:
    return "".join(json.dumps(r) + "\n" for r in recs)


def test_bench_report_escapes_what_results_jsonl_holds(bench, tmp_path):
    def hostile(recs, root):
        recs[0]["status"] = HOSTILE
        recs[1]["workload"] = HOSTILE
        recs[1]["submission"] = HOSTILE
        recs[1]["host"] = {"name": HOSTILE, "processor": HOSTILE}
        recs[0]["params"] = {HOSTILE: HOSTILE}  # the chosen configurations' table
        recs[0]["cpu"] = {"per_step": HOSTILE}  # CPU per step: not a number, left out
        recs.append({**recs[0], "phase": "confirm", "test": {"test_accuracy": HOSTILE}})  # re-runs' spread
        return _dump(recs)

    root = _edit(bench, tmp_path, hostile)
    out = CliRunner().invoke(app, ["bench", "report", str(root)])
    assert out.exit_code == 0, out.output
    assert_escaped((root / "report.html").read_text())


@pytest.mark.parametrize(("damage", "says"), [
    (lambda recs, root: _dump([{k: v for k, v in r.items() if k != "status"} if i == 1 else r
                               for i, r in enumerate(recs)]), "results.jsonl:2: not a bench trial record: it lacks 'status'"),
    (lambda recs, root: _dump([{k: v for k, v in r.items() if k != "workload"} for r in recs]),
     "results.jsonl:1: not a bench trial record: it lacks 'workload'"),
    (lambda recs, root: _dump(recs) + "[1, 2]\n", "results.jsonl:4: a JSON list, not a record"),
    (lambda recs, root: _dump(recs) + '{"trial": 9\n', "results.jsonl:4: not JSON"),
    (lambda recs, root: _dump([{**r, "time_to_target": 5} for r in recs]), "'time_to_target' = 5 is not dict"),
    (lambda recs, root: (root / "bench.json").write_text("[1, 2]"), "bench.json: not a bench description"),
    (lambda recs, root: (root / "bench.json").write_text('{"external": {"config": {"r_max": "x"}}}'),
     "bench.json: r_max = 'x'"),
], ids=["no-status", "no-workload", "a-list-line", "a-torn-line", "a-bad-field", "bench-json-a-list", "bad-r_max"])
def test_a_malformed_bench_is_one_clear_message(bench, tmp_path, damage, says):
    def fn(recs, root):
        text = damage(recs, root)
        return text if isinstance(text, str) else None

    root = _edit(bench, tmp_path, fn)
    out = CliRunner().invoke(app, ["bench", "report", str(root)])
    assert out.exit_code == 2 and says in out.output, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)
