"""`report.html` of a bench directory: score table, performance profiles, time-to-target,
re-runs with confidence intervals, learning-rate sensitivity, default-vs-tuned gap, chosen
configurations — one self-contained page (figures embedded), from `results.jsonl` alone."""

from __future__ import annotations

import base64
import html
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thalweg.bench import figures, scoring
from thalweg.bench.results import read_results

__all__ = ["summary", "write_report"]


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return _e(v)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="wide"><table><tr>{h}</tr>{body}</table></div>'  # scrolls, never overflows


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return "<p>(no data for this figure)</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}"></figure>'


def _chosen(records: Sequence[Mapping[str, Any]], ruleset: str) -> dict[tuple[str, str], Mapping[str, Any]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("ruleset") == ruleset and r.get("phase") == "tune":
            groups[(r["workload"], r["submission"])].append(r)
    return {k: b for k, v in groups.items() if (b := scoring.best_record(v)) is not None}


def summary(records: Sequence[Mapping[str, Any]], r_max: float = scoring.R_MAX) -> dict[str, Any]:
    """Scores per ruleset and unit, time-to-target per workload and submission (JSON-able)."""
    out: dict[str, Any] = {}
    for rs in sorted({r.get("ruleset") for r in records if r.get("ruleset") in ("external", "self")}):
        out[rs] = {}
        for unit in ("seconds", "steps"):
            times = scoring.workload_times(records, unit, rs)
            out[rs][unit] = {
                "score": scoring.scores(records, unit, rs, r_max),
                "time_to_target": {s: {w: (t if math.isfinite(t) else None) for w, t in per.items()}
                                   for s, per in times.items()},
            }  # fmt: skip
    return out


def _score_rows(records: Sequence[Mapping[str, Any]], rs: str, r_max: float) -> list[list[str]]:
    sec, stp = scoring.scores(records, "seconds", rs, r_max), scoring.scores(records, "steps", rs, r_max)
    ratios = scoring.performance_ratios(scoring.workload_times(records, "seconds", rs), r_max)
    n = {s: sum(1 for r in records if r.get("ruleset") == rs and r["submission"] == s) for s in sec}
    rows = []
    for s in sorted(sec, key=lambda s: (-sec[s], -stp[s], s)):
        within = sum(math.isfinite(x) for x in ratios[s].values())
        rows.append([f"<b>{_e(s)}</b>", f"{sec[s]:.3f}", f"{stp[s]:.3f}",
                     f"{within}/{len(ratios[s])}", str(n[s])])  # fmt: skip
    return rows


def _ttt_rows(records: Sequence[Mapping[str, Any]], rs: str) -> tuple[list[str], list[list[str]]]:
    """One row per submission, one column per workload (19 submissions as columns overflow)."""
    sec, stp = scoring.workload_times(records, "seconds", rs), scoring.workload_times(records, "steps", rs)
    subs = sorted(sec)
    wls = list(dict.fromkeys(r["workload"] for r in records if r.get("ruleset") == rs))
    rows = []
    for s in subs:
        cells = []
        for w in wls:
            t, k = stp[s].get(w, math.inf), sec[s].get(w, math.inf)
            cells.append(f"{t:.0f} <small>({k:.2f} s)</small>" if math.isfinite(t) else "∞")
        rows.append([f"<b>{_e(s)}</b>", *cells])
    return ["submission", *wls], rows


def _interval(c: tuple[float, float, float] | None, lo: float | None = None, hi: float | None = None,
              n: int = 0) -> str:
    """"mean [low, high]" of a Student-t interval, clipped to what the quantity can be (a step
    count is ≥ 0, an accuracy in [0, 1]); with 2 values the interval is ±6.4 sd wide — said so."""
    if c is None:
        return "—"
    m, a, b = c
    a = a if lo is None else max(a, lo)
    b = b if hi is None else min(b, hi)
    note = " <small>(2 seeds: t-interval ±6.4 sd)</small>" if n == 2 else ""
    return f"{m:.4g} [{a:.4g}, {b:.4g}]{note}"


def _rerun_rows(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("phase") == "rerun" and r.get("ruleset") == "external":
            groups[(r["workload"], r["submission"])].append(r)
    rows = []
    for (w, s), rs in sorted(groups.items()):
        hit = [r["time_to_target"]["steps"] for r in rs if r.get("reached")]
        finals = [r.get("final_metric") for r in rs]
        tests = [(r.get("test") or {}).get("test_accuracy") for r in rs]
        metric = rs[0].get("metric") or ""
        bounds = (0, 1) if metric.endswith("accuracy") else (0, None) if "loss" in metric else (None, None)
        rows.append([_e(w), _e(s), f"{len(hit)}/{len(rs)}",
                     _interval(scoring.mean_ci(hit), lo=0, n=len(hit)),
                     _interval(scoring.mean_ci(finals), *bounds,
                               n=sum(v is not None for v in finals)),
                     _interval(scoring.mean_ci(tests), 0, 1, n=sum(v is not None for v in tests))])
    return rows


def _gap_rows(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    chosen = _chosen(records, "external")
    rows = []
    for r in records:
        if r.get("phase") != "defaults":
            continue
        best = chosen.get((r["workload"], r["submission"]))
        if best is None:
            continue
        d_t, t_t = r["time_to_target"]["steps"], best["time_to_target"]["steps"]
        rows.append([_e(r["workload"]), _e(r["submission"]), _num(r["best"]["metric"]),
                     _num(best["best"]["metric"]), "∞" if d_t is None else str(d_t),
                     "∞" if t_t is None else str(t_t), _e(r["status"])])  # fmt: skip
    return rows


def _params(p: Mapping[str, Any]) -> str:
    return ", ".join(f"{_e(k)}={_num(v, 3)}" for k, v in sorted(p.items())) or "(defaults)"


def write_report(bench_dir: str | Path) -> Path:
    """Write `report.html` and `figures/*.png` for the bench in `bench_dir`."""
    root = Path(bench_dir)
    results = root / "results.jsonl"
    if not results.is_file():
        raise FileNotFoundError(f"{results}: no results (is {root} a bench directory?)")
    records = read_results(results)
    meta = json.loads((root / "bench.json").read_text()) if (root / "bench.json").is_file() else {}
    r_max = next((m["config"].get("r_max", scoring.R_MAX) for m in meta.values()), scoring.R_MAX)
    rulesets = [rs for rs in ("external", "self") if any(r.get("ruleset") == rs for r in records)]
    figs = root / "figures"
    figs.mkdir(exist_ok=True)
    prof = figures.plot_profiles(records, rulesets, figs / "profile.png", r_max)
    sens = figures.plot_sensitivity(records, figs / "sensitivity.png")
    curves = figures.plot_curves(_chosen(records, "external"), figs / "curves.png")
    status: dict[str, int] = defaultdict(int)
    for r in records:
        status[r["status"]] += 1
    env = records[0] if records else {}
    parts = [f"<h1>thalweg bench <code>{_e(root.name)}</code></h1>",
             f"<p>{len(records)} trials: " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())) + ". "
             f"Host {_e((env.get('host') or {}).get('name', '?'))} ({_e((env.get('host') or {}).get('processor', ''))}); "
             + ", ".join(f"{_e(k)} {_e(v)}" for k, v in (env.get('versions') or {}).items()) + ".</p>"]  # fmt: skip
    for rs in rulesets:
        parts.append(f"<h2>Scores — {rs} tuning</h2>")
        parts.append("<p>AlgoPerf score: ∫₁<sup>r_max</sup> ρ(τ) dτ / (r_max − 1), r_max = "
                     f"{r_max:g}; 1 = fastest on every workload, 0 = never within r_max× of the "
                     "fastest. Time per workload: median over studies of each study's fastest "
                     "trial to the target.</p>")  # fmt: skip
        parts.append(_table(["submission", "score (seconds)", "score (steps)", "workloads within r_max", "trials"],
                            _score_rows(records, rs, r_max)))  # fmt: skip
        head, rows = _ttt_rows(records, rs)
        parts.append(f"<h3>Time to target — {rs}: steps of the median study's fastest trial (its "
                     "training seconds)</h3>" + _table(head, rows))
    parts.append("<h2>Performance profiles</h2>" + _img(prof, "performance profile"))
    parts.append("<h2>Learning-rate sensitivity</h2>" + _img(sens, "learning-rate sensitivity"))
    reruns = _rerun_rows(records)
    if reruns:
        parts.append("<h2>The chosen configuration over seeds</h2><p>Mean and 95 % Student-t "
                     "interval over the re-run seeds, clipped to what the quantity can be (steps ≥ 0, "
                     "accuracies in [0, 1]).</p>")  # fmt: skip
        parts.append(_table(["workload", "submission", "reached", "steps to target", "final metric",
                             "test accuracy"], reruns))  # fmt: skip
    gap = _gap_rows(records)
    if gap:
        parts.append("<h2>Default vs tuned</h2>")
        parts.append(_table(["workload", "submission", "best metric (defaults)", "best metric (tuned)",
                             "steps to target (defaults)", "steps to target (tuned)", "defaults status"], gap))  # fmt: skip
    parts.append("<h2>Curves of the chosen configurations</h2>" + _img(curves, "curves"))
    chosen = _chosen(records, "external")
    if chosen:
        parts.append("<h2>Chosen configurations</h2>" + _table(
            ["workload", "submission", "parameters", "steps to target"],
            [[_e(w), _e(s), _params(r.get("params") or {}), _num(r["time_to_target"]["steps"])]
             for (w, s), r in sorted(chosen.items())]))  # fmt: skip
    doc = ("<!doctype html><html><head><meta charset='utf-8'>"
           f"<title>thalweg bench {_e(root.name)}</title><style>"
           "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
           "table{border-collapse:collapse;margin:0.5em 0}th,td{border-bottom:1px solid #ddd;"
           "padding:3px 9px;text-align:left;font-size:13px}img{max-width:100%}"
           ".wide{overflow-x:auto;max-width:100%}"
           "</style></head><body>" + "\n".join(parts) + "</body></html>\n")  # fmt: skip
    out = root / "report.html"
    out.write_text(doc, encoding="utf-8")
    (root / "scores.json").write_text(json.dumps(summary(records, r_max), indent=1, sort_keys=True))
    return out
