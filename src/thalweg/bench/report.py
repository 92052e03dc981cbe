"""`report.html` of a bench directory: the headline score over the real workloads in steps with
bootstrap intervals on score and rank, per workload the time, verdict and reach counts of
every study, the toy problems scored apart, CPU time per step, tuned values at the edge of
their range, performance profiles, learning-rate sensitivity, default-vs-tuned gap, chosen
configurations — one self-contained page (figures embedded), from `results.jsonl` and
`bench.json`."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thalweg.bench import figures, scoring, uncertainty
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
    """Per ruleset: the real workloads' and the toy problems' scores in steps with bootstrap
    intervals, verdicts and reach counts (`real`, `toy`); the headline's (the real workloads,
    else the toy problems) scores in steps, CPU seconds and wall seconds (JSON-able; scores.json)."""
    out: dict[str, Any] = {}
    for rs in sorted({r.get("ruleset") for r in records if r.get("ruleset") in ("external", "self")}):
        out[rs] = {}
        for group, recs in (("real", scoring.real(records)), ("toy", scoring.toy(records))):
            if recs:
                out[rs][group] = uncertainty.summarize(recs, rs, "steps", r_max).to_dict()
        head = scoring.headline(records)
        for unit in ("cpu", "seconds", "steps"):
            times = scoring.workload_times(head, unit, rs)
            out[rs][unit] = {
                "score": scoring.scores(head, unit, rs, r_max),
                "time_to_target": {s: {w: (t if math.isfinite(t) else None) for w, t in per.items()}
                                   for s, per in times.items()},
            }  # fmt: skip
    return out


VERDICT_MARK = {v: Markup(f" <i>{v}</i>") for v in ("too slow", "inconclusive", "never reached")}


def _cell(c: uncertainty.Cell, verdict: str) -> Markup:
    """Steps to the target (median over studies), the verdict, and per study: tuning trials
    that reached / trials, confirmations that reached / confirmations."""
    t = c.time
    head = f"{t:.0f}" if math.isfinite(t) else "∞"
    counts = " ".join(f"{a}/{b}" + (f"·{x}/{y}" if y else "") for a, b, x, y in c.reach)
    return html("{}{}<br><small>{}</small>", head, VERDICT_MARK.get(verdict, Markup("")), counts)


def _score_rows(records: Sequence[Mapping[str, Any]], rs: str, r_max: float,
                s: uncertainty.Summary) -> tuple[list[str], list[list[Any]]]:  # fmt: skip
    wls = list(dict.fromkeys(r["workload"] for r in records if r.get("ruleset") == rs))
    cpu = scoring.scores(records, "cpu", rs, r_max)
    rows = []
    for sub in sorted(s.score, key=lambda k: (-s.score[k], k)):
        lo, hi = s.score_ci[sub]
        rlo, rhi = s.rank_ci[sub]
        cells = [_cell(s.cells[sub][w], s.verdicts[sub][w]) if w in s.cells[sub] else "—" for w in wls]
        rows.append([html("<b>{}</b>", sub), html("{} <small>[{}, {}]</small>", f"{s.score[sub]:.3f}", f"{lo:.2f}", f"{hi:.2f}"),
                     html("{} <small>[{}, {}]</small>", f"{s.rank[sub]:g}", f"{rlo:g}", f"{rhi:g}"),
                     f"{cpu.get(sub, 0.0):.3f}", *cells])  # fmt: skip
    head = ["submission", "score (steps) [95 %]", "rank [95 %]", "score (CPU s)", *wls]
    return head, rows


def _ahead_rows(s: uncertainty.Summary, level: float = 0.95) -> tuple[list[str], list[list[Any]]]:
    """The pairwise matrix: the share of bootstrap replicates in which the row's score is above
    the column's, in rank order; bold where it reaches `level`."""
    order = sorted(s.score, key=lambda k: (s.rank[k], k))
    rows: list[list[Any]] = []
    for a in order:
        cells: list[Any] = []
        for b in order:
            p = s.ahead.get(a, {}).get(b)
            cells.append("—" if p is None else html("<b>{}</b>", f"{p:.0%}") if p >= level else f"{p:.0%}")
        rows.append([html("<b>{}</b>", a), *cells])
    return ["ahead of →", *order], rows


def _cpu_rows(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Median CPU milliseconds per training step (this thread's CPU time, not wall seconds)."""
    per: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        v = (r.get("cpu") or {}).get("per_step")
        if isinstance(v, int | float) and v:
            per[(r["submission"], r["workload"])].append(float(v))
    subs = sorted({s for s, _ in per})
    wls = list(dict.fromkeys(w for _, w in per))
    rows = [[s, *(f"{1e3 * _median(per[(s, w)]):.2f}" if per.get((s, w)) else "—" for w in wls)] for s in subs]
    return ["submission", *wls], rows


def _median(xs: Sequence[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _edge_rows(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> list[list[str]]:
    """Each study's chosen configuration whose tuned values sit at the edge of their range."""
    from thalweg.bench.spaces import at_edge

    spaces = {n: d.get("space", []) for m in meta.values() if isinstance(m, dict)
              for n, d in (m.get("submissions") or {}).items()}  # fmt: skip
    groups: dict[tuple[str, str, Any], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("phase") == "tune" and r.get("ruleset") == "external":
            groups[(r["workload"], r["submission"], r.get("study_index"))].append(r)
    rows = []
    for (w, s, k), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2] or 0))):
        best = scoring.best_record(recs)
        edge = at_edge(best.get("params") or {}, spaces.get(s, [])) if best is not None else []
        if edge:
            rows.append([w, s, str(k), ", ".join(edge)])
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


def _numbers(values: Sequence[Any]) -> list[float]:
    """The finite numbers among `values` (a record read back may hold anything)."""
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]


def _rerun_rows(records: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("phase") in ("rerun", "confirm") and r.get("ruleset") == "external":
            groups[(r["workload"], r["submission"])].append(r)
    rows = []
    for (w, s), rs in sorted(groups.items()):
        hit = _numbers([r["time_to_target"]["steps"] for r in rs if r.get("reached")])
        finals = _numbers([r.get("final_metric") for r in rs])
        tests = _numbers([(r.get("test") or {}).get("test_accuracy") for r in rs])
        metric = str(rs[0].get("metric") or "")
        bounds = (0, 1) if metric.endswith("accuracy") else (0, None) if "loss" in metric else (None, None)
        rows.append([w, s, f"{len(hit)}/{len(rs)}", _interval(scoring.mean_ci(hit), lo=0, n=len(hit)),
                     _interval(scoring.mean_ci(finals), *bounds, n=len(finals)),
                     _interval(scoring.mean_ci(tests), 0, 1, n=len(tests))])  # fmt: skip
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


SCORE_NOTE = (
    "<p>AlgoPerf score in steps: ∫₁<sup>r_max</sup> ρ(τ) dτ / (r_max − 1), r_max = {r_max:g}; 1 = "
    "fastest on every workload, 0 = never within r_max× of the fastest. A workload's time is the "
    "median over studies of each study's fastest trial to the target. Intervals: 95 % of a "
    "bootstrap over studies and seeds (each study's tuning time and its chosen configuration's "
    "confirmations on fresh seeds). Cells: steps, then per study <i>reached/trials</i>·"
    "<i>confirmed/seeds</i>; <i>inconclusive</i>: the studies split; <i>too slow</i>: reached but "
    "slower than r_max × the fastest; <i>never reached</i>: no study, no seed. The CPU-seconds "
    "score uses steps × each trial's CPU seconds per step.</p>")


AHEAD_NOTE = (
    "<h3>Who is ahead — {rs} (share of the bootstrap's replicates in which the row scores above the "
    "column)</h3><p>A pairwise verdict: ≥ 95 % (bold) means a re-run is likely to put them in this "
    "order (how often independent runs agree is measured by benchmarks/bench_replicates.py; "
    "docs/bench.md has the figures). Two rank intervals that overlap do not mean the two are "
    "tied: this is the comparison to read.</p>")


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
    prof = figures.plot_profiles(scoring.headline(records), rulesets, figs / "profile.png", r_max)
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
        for title, recs in (("real workloads (the headline)", scoring.real(records)),
                            ("toy problems (scored apart)", scoring.toy(records))):  # fmt: skip
            if not any(r.get("ruleset") == rs for r in recs):
                continue
            parts.append(html("<h2>Scores — {} tuning, {}</h2>", rs, title))
            s = uncertainty.summarize(recs, rs, "steps", r_max)
            head, rows = _score_rows(recs, rs, r_max, s)
            parts.append(table(head, rows))
            if len(s.score) > 1:
                parts.append(html(AHEAD_NOTE, rs=rs))
                parts.append(table(*_ahead_rows(s)))
                parts.append(html("<p><b>Verdict:</b> {}.</p>", s.verdict()))
        parts.append(html(SCORE_NOTE, r_max=r_max))
        head, rows = _ttt_rows(scoring.headline(records), rs)
        parts.append(html("<h3>Time to target — {} (steps of the median study's fastest trial; its wall seconds "
                          "on this machine)</h3>{}", rs, table(head, rows)))  # fmt: skip
    head, rows = _cpu_rows(records)
    if rows:
        parts.append(html("<h2>CPU time per step (ms)</h2><p>Median over each submission's trials of the training "
                          "steps' CPU time (the trial thread's, evaluation excluded): what a step costs, "
                          "measured apart from the wall clock of a shared machine.</p>{}", table(head, rows)))  # fmt: skip
    edges = _edge_rows(records, meta)
    if edges:
        parts.append(html("<h2>Tuned values at the edge of their range</h2><p>A study's chosen configuration "
                          "within 5 % (log scale where log-uniform) of a range's end: the space may be too "
                          "narrow there.</p>{}", table(["workload", "submission", "study", "values"], edges)))  # fmt: skip
    parts.append(html("<h2>Performance profiles</h2>{}", _img(prof, "performance profile")))
    parts.append(html("<h2>Learning-rate sensitivity</h2>{}", _img(sens, "learning-rate sensitivity")))
    reruns = _rerun_rows(records)
    if reruns:
        parts.append(Markup("<h2>The chosen configurations on fresh seeds</h2><p>Each study's chosen "
                            "configuration re-run on fresh seeds (and the overall choice's re-runs): mean and "
                            "95 % Student-t interval over those seeds, clipped to what the quantity can be "
                            "(steps ≥ 0, losses ≥ 0, accuracies in [0, 1]).</p>"))  # fmt: skip
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
