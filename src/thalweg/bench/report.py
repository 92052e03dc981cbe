"""`report.html` of a bench directory: score table, performance profiles, time-to-target,
re-runs with confidence intervals, learning-rate sensitivity, default-vs-tuned gap, chosen
configurations — one self-contained page (figures embedded), from `results.jsonl` alone."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thalweg.bench import figures, scoring
from thalweg.bench.results import read_results
from thalweg.page import Markup, document, html, png_data, table

__all__ = ["summary", "write_report"]


#: what every record the report reads must hold (results.jsonl written by `bench run` does)
_NUM = (int, float, type(None))
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "workload": str, "submission": str, "phase": str, "ruleset": str, "status": str,
    "time_to_target": dict, "time_to_target.steps": _NUM, "time_to_target.seconds": _NUM,
    "best": dict, "best.metric": _NUM}  # fmt: skip


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _img(path: Path | None, alt: str) -> Markup:
    if path is None:
        return Markup("<p>(no data for this figure)</p>")
    return html('<figure><img src="{}" alt="{}"></figure>', png_data(path), alt)


def _bench_json(path: Path) -> dict[str, Any]:
    """bench.json, checked: a JSON object by ruleset, each with its `config` (a ValueError naming
    the file otherwise); {} when there is none."""
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(meta, dict) or not all(isinstance(m, dict) and isinstance(m.get("config"), dict)
                                             for m in meta.values()):
        raise ValueError(f"{path}: not a bench description (a JSON object by ruleset, each with its "
                         f"'config'), got {type(meta).__name__} {json.dumps(meta)[:60]}")
    return meta


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
        rows.append([html("<b>{}</b>", s), f"{sec[s]:.3f}", f"{stp[s]:.3f}",
                     f"{within}/{len(ratios[s])}", str(n[s])])  # fmt: skip
    return rows


def _ttt_rows(records: Sequence[Mapping[str, Any]], rs: str) -> tuple[list[str], list[list[Any]]]:
    """One row per submission, one column per workload (19 submissions as columns overflow)."""
    sec, stp = scoring.workload_times(records, "seconds", rs), scoring.workload_times(records, "steps", rs)
    subs = sorted(sec)
    wls = list(dict.fromkeys(r["workload"] for r in records if r.get("ruleset") == rs))
    rows = []
    for s in subs:
        cells = []
        for w in wls:
            t, k = stp[s].get(w, math.inf), sec[s].get(w, math.inf)
            cells.append(html("{} <small>({} s)</small>", f"{t:.0f}", f"{k:.2f}") if math.isfinite(t) else "∞")
        rows.append([html("<b>{}</b>", s), *cells])
    return ["submission", *wls], rows


def _interval(c: tuple[float, float, float] | None, lo: float | None = None, hi: float | None = None,
              n: int = 0) -> Markup:
    """"mean [low, high]" of a Student-t interval, clipped to what the quantity can be (a step
    count is ≥ 0, an accuracy in [0, 1]); with 2 values the interval is ±6.4 sd wide — said so."""
    if c is None:
        return Markup("—")
    m, a, b = c
    a = a if lo is None else max(a, lo)
    b = b if hi is None else min(b, hi)
    note = Markup(" <small>(2 seeds: t-interval ±6.4 sd)</small>") if n == 2 else Markup("")
    return html("{} [{}, {}]{}", f"{m:.4g}", f"{a:.4g}", f"{b:.4g}", note)


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
        metric = str(rs[0].get("metric") or "")
        bounds = (0, 1) if metric.endswith("accuracy") else (0, None) if "loss" in metric else (None, None)
        rows.append([w, s, f"{len(hit)}/{len(rs)}",
                     _interval(scoring.mean_ci(hit), lo=0, n=len(hit)),
                     _interval(scoring.mean_ci(finals), *bounds, n=sum(v is not None for v in finals)),
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
        rows.append([r["workload"], r["submission"], _num(r["best"].get("metric")),
                     _num(best["best"].get("metric")), "∞" if d_t is None else str(d_t),
                     "∞" if t_t is None else str(t_t), r["status"]])  # fmt: skip
    return rows


def _params(p: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_num(v, 3)}" for k, v in sorted(p.items())) or "(defaults)"


def write_report(bench_dir: str | Path) -> Path:
    """Write `report.html` and `figures/*.png` for the bench in `bench_dir`."""
    root = Path(bench_dir)
    results = root / "results.jsonl"
    if not results.is_file():
        raise FileNotFoundError(f"{results}: no results (is {root} a bench directory?)")
    records = read_results(results, required=REQUIRED)
    meta = _bench_json(root / "bench.json")
    r_max = next((m["config"].get("r_max", scoring.R_MAX) for m in meta.values()), scoring.R_MAX)
    if isinstance(r_max, bool) or not isinstance(r_max, int | float) or not math.isfinite(r_max) or r_max <= 1:
        raise ValueError(f"{root / 'bench.json'}: r_max = {r_max!r}: must be a finite number above 1")
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
    host = env.get("host") if isinstance(env.get("host"), dict) else {}
    versions = env.get("versions") if isinstance(env.get("versions"), dict) else {}
    parts: list[Any] = [
        html("<p>{} trials: {}. Host {} ({}); {}.</p>", len(records),
             ", ".join(f"{k} {v}" for k, v in sorted(status.items())), host.get("name", "?"),
             host.get("processor", ""), ", ".join(f"{k} {v}" for k, v in versions.items()))]  # fmt: skip
    for rs in rulesets:
        parts.append(html("<h2>Scores — {} tuning</h2>", rs))
        parts.append(html("<p>AlgoPerf score: ∫₁<sup>r_max</sup> ρ(τ) dτ / (r_max − 1), r_max = "
                          "{}; 1 = fastest on every workload, 0 = never within r_max× of the "
                          "fastest. Time per workload: median over studies of each study's fastest "
                          "trial to the target.</p>", f"{r_max:g}"))  # fmt: skip
        parts.append(table(["submission", "score (seconds)", "score (steps)", "workloads within r_max", "trials"],
                           _score_rows(records, rs, r_max)))  # fmt: skip
        head, rows = _ttt_rows(records, rs)
        parts.append(html("<h3>Time to target — {}: steps of the median study's fastest trial (its training "
                          "seconds)</h3>{}", rs, table(head, rows)))
    parts.append(html("<h2>Performance profiles</h2>{}", _img(prof, "performance profile")))
    parts.append(html("<h2>Learning-rate sensitivity</h2>{}", _img(sens, "learning-rate sensitivity")))
    reruns = _rerun_rows(records)
    if reruns:
        parts.append(Markup("<h2>The chosen configuration over seeds</h2><p>Mean and 95 % Student-t "
                            "interval over the re-run seeds, clipped to what the quantity can be (steps ≥ 0, "
                            "losses ≥ 0, accuracies in [0, 1]).</p>"))  # fmt: skip
        parts.append(table(["workload", "submission", "reached", "steps to target", "final metric",
                            "test accuracy"], reruns))  # fmt: skip
    gap = _gap_rows(records)
    if gap:
        parts.append(Markup("<h2>Default vs tuned</h2>"))
        parts.append(table(["workload", "submission", "best metric (defaults)", "best metric (tuned)",
                            "steps to target (defaults)", "steps to target (tuned)", "defaults status"], gap))  # fmt: skip
    parts.append(html("<h2>Curves of the chosen configurations</h2>{}", _img(curves, "curves")))
    chosen = _chosen(records, "external")
    if chosen:
        parts.append(html("<h2>Chosen configurations</h2>{}", table(
            ["workload", "submission", "parameters", "steps to target"],
            [[w, s, _params(r.get("params") or {}), _num(r["time_to_target"].get("steps"))]
             for (w, s), r in sorted(chosen.items())])))  # fmt: skip
    doc = document(f"thalweg bench {root.name}", parts)
    out = root / "report.html"
    out.write_text(doc, encoding="utf-8")
    (root / "scores.json").write_text(json.dumps(summary(records, r_max), indent=1, sort_keys=True))
    return out
