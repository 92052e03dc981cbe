"""The doctor zoo's report (benchmarks/doctor_zoo.py): accuracy per fault, the confusion matrix,
false alarms on the healthy bases, the verified treatments — as a thalweg.record's tables."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import doctor_faults as F


def _pct(a: int, n: int) -> str:
    return f"{100 * a / n:.0f} %" if n else "—"


def _label(tag: str) -> str:
    """A tag as the report names it: `before` for an older revision's doctor, else `now`."""
    return "before" if tag.startswith("at-") else "now"


def _right(x: dict[str, Any], c: dict[str, Any], k: int, lenient: bool = False) -> bool:
    """The expected cause among the first `k` codes (lenient: or the old doctor's name for it)."""
    names = {c["expected"], *(F.OLD_NAMES.get(c["fault"], set()) if lenient else set())}
    return bool(names & set(x["codes"][:k]))


def report(cases: list[dict[str, Any]], answers: dict[str, dict[str, dict[str, Any]]], tags: list[str],
           healthy: dict[str, dict[str, dict[str, Any]]]) -> tuple[dict[str, Any], list[str]]:
    """Accuracy per fault for each tag (for an older doctor also with its symptom names counted as
    right), the confusion matrix of the last tag, false alarms on the healthy bases."""
    lines: list[str] = []
    figures: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    kept = [c for c in cases if c["hurts"]]
    by_fault: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in kept:
        by_fault[c["fault"]].append(c)
    cols = [(t, False) for t in tags] + [(t, True) for t in tags if _label(t) == "before"]
    head = ["fault", "expected cause", "runs"]
    for t, lenient in cols:
        name = _label(t) + (", its symptom names accepted" if lenient else "")
        head += [f"top-1 {name}", f"top-3 {name}"]
    rows, totals = [], {col: [0, 0] for col in cols}
    for fault in F.FAULTS:
        cs = by_fault.get(fault, [])
        row = [fault, F.EXPECTED[fault], str(len(cs))]
        for col in cols:
            t, lenient = col
            a = [answers[t][c["sick"]["run_dir"]] for c in cs]
            one = sum(_right(x, c, 1, lenient) for x, c in zip(a, cs, strict=True))
            three = sum(_right(x, c, 3, lenient) for x, c in zip(a, cs, strict=True))
            totals[col][0] += one
            totals[col][1] += three
            row += [_pct(one, len(cs)), _pct(three, len(cs))]
            if not lenient:
                figures[f"{_label(t)}.{fault}.top1"] = 100 * one / len(cs) if cs else None
        rows.append(row)
    n = len(kept)
    row = ["**all**", "", str(n)]
    for col in cols:
        t, lenient = col
        row += [f"**{_pct(totals[col][0], n)}**", f"**{_pct(totals[col][1], n)}**"]
        key = _label(t) + (".lenient" if lenient else "")
        figures[f"{key}.top1"] = 100 * totals[col][0] / n if n else None
        figures[f"{key}.top3"] = 100 * totals[col][1] / n if n else None
    rows.append(row)
    tables["accuracy"] = {"header": head, "rows": rows}
    figures["sick_runs"] = n
    figures["unhealthy_bases"] = sum(bool(c.get("unhealthy_base")) for c in cases)
    figures["redrawn_bases"] = sum(int(c.get("attempt") or 0) for c in cases)
    figures["did_not_hurt"] = len(cases) - n - figures["unhealthy_bases"]
    last = tags[-1]
    got = Counter(answers[last][c["sick"]["run_dir"]]["codes"][0] for c in kept)
    order = [F.EXPECTED[f] for f in F.FAULTS]
    codes = sorted(got, key=lambda k: (order.index(k) if k in order else len(order), k))
    conf_rows = []
    for fault in F.FAULTS:
        cnt = Counter(answers[last][c["sick"]["run_dir"]]["codes"][0] for c in by_fault.get(fault, []))
        conf_rows.append([fault] + [str(cnt[k]) if cnt[k] else "·" for k in codes])
    tables["confusion"] = {"header": ["fault \\ first code", *codes], "rows": conf_rows}
    for t in tags:
        h = healthy[t]
        alarms = {k: v["warnings"] for k, v in h.items() if v["warnings"]}
        figures[f"{_label(t)}.healthy_runs"] = len(h)
        figures[f"{_label(t)}.false_alarms"] = len(alarms)
        figures[f"{_label(t)}.false_alarm_rate"] = 100 * len(alarms) / len(h) if h else None
        lines.append(f"healthy base runs ({_label(t)}): {len(h)}, false alarms {len(alarms)} "
                     f"({_pct(len(alarms), len(h))})" + "".join(f"\n    {Path(k).name}: {v}" for k, v in alarms.items()))
    tables["false_alarms"] = {"header": ["doctor", "healthy runs", "false alarms", "rate", "codes"], "rows": [
        [_label(t), str(figures[f"{_label(t)}.healthy_runs"]), str(figures[f"{_label(t)}.false_alarms"]),
         _pct(figures[f"{_label(t)}.false_alarms"], figures[f"{_label(t)}.healthy_runs"]),
         ", ".join(sorted({c for v in healthy[t].values() for c in v["warnings"]})) or "—"] for t in tags]}
    return {"figures": figures, "tables": tables}, lines


def table(t: dict[str, Any]) -> str:
    out = ["| " + " | ".join(t["header"]) + " |", "|" + "---|" * len(t["header"])]
    out += ["| " + " | ".join(r) + " |" for r in t["rows"]]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def verification(rec: dict[str, Any], cases: list[dict[str, Any]], got: list[dict[str, Any]]) -> None:
    """Add the verified treatments (`got`, one per case) to `rec`: a table and two figures."""
    rows = [[str(c["seed"]), c["fault"], v["code"], json.dumps(v["fix"]) if v["fix"] else "—",
             v.get("metric") or "—", _fmt(v.get("before")), _fmt(v.get("after")),
             "yes" if v["improved"] else "no" if v["improved"] is False else "—", v.get("why") or ""]
            for c, v in zip(cases, got, strict=True)]
    rec["tables"]["verification"] = {"header": ["seed", "fault", "treated", "fix", "metric", "before", "after",
                                                "improved", "why not"], "rows": rows}
    rec["figures"]["verified"] = len(got)
    rec["figures"]["improved"] = sum(bool(v["improved"]) for v in got)
