"""The sick-run zoo: train every `examples/sick/*.toml`, ask the doctor, treat and verify.

    python examples/sick/zoo.py                 # the full zoo (each run's own budget)
    python examples/sick/zoo.py --epochs 3      # a reduced budget (what the test runs)
    python examples/sick/zoo.py healthy nonfinite
    python examples/sick/zoo.py --json zoo.json # also the table and figures (thalweg.record)

Each config's first line names the code the doctor must rank first (`# expected: CODE`;
HEALTHY means no warning-level finding). The table shows expected, got, and the verified
treatment's metric before → after (both trained for the same budget on the same data).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def members(names: list[str] | None = None) -> list[Path]:
    """The zoo's configs (all, or those named)."""
    paths = sorted(HERE.glob("*.toml"))
    if names:
        paths = [p for p in paths if p.stem in names]
    return paths


def expected(path: Path) -> str:
    """The code a config's first line says the doctor must rank first."""
    m = re.match(r"#\s*expected:\s*([A-Z_]+)", path.read_text(encoding="utf-8"))
    if m is None:
        raise ValueError(f"{path}: first line must be '# expected: CODE'")
    return m.group(1)


def run_member(path: Path, out_dir: Path, *, epochs: int | None = None, verify: bool = True,
               verify_epochs: int | None = None, rediagnose: bool = True) -> dict[str, Any]:
    """Train one member, diagnose it, and (if treatable) treat and verify it."""
    from thalweg.diagnose.commands import treat
    from thalweg.diagnose.commands import verify as verify_treatment
    from thalweg.diagnose.examine import examine
    from thalweg.train import NonFiniteError, fit, load_config

    over: dict[str, Any] = {"out_dir": str(out_dir), "diagnostics.figures": False, "diagnostics.report": False}
    if epochs is not None:
        over["train.epochs"] = epochs
    cfg = load_config(path, over)
    rel = cfg.data.options.get("path")
    if isinstance(rel, str) and not Path(rel).is_absolute():
        cfg.data.options["path"] = str(HERE.parents[1] / rel)
    t0 = time.perf_counter()
    with contextlib.suppress(NonFiniteError):  # a run the guard stopped is a patient too
        fit(cfg, quiet=True)
    ex = examine(cfg.run_dir())
    top = ex.findings[0]
    warn = [f.code for f in ex.findings if f.severity != "info"]
    row: dict[str, Any] = {"run": path.stem, "expected": expected(path), "got": top.code, "warnings": warn,
                           "confidence": top.confidence, "fix": None, "before": None, "after": None,
                           "improved": None, "metric": None, "after_top": None}
    done = treat(ex)
    if done is not None:
        f, treated, _ = done
        row["fix"] = f.fix
        if verify:
            v = verify_treatment(ex, f, treated, epochs=verify_epochs, rediagnose=rediagnose)
            row.update(before=v.before, after=v.after, improved=v.improved, metric=v.metric, after_top=v.after_top)
    row["seconds"] = time.perf_counter() - t0
    return row


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="zoo members (file stems); default: all")
    ap.add_argument("--epochs", type=int, default=None, help="override each run's epochs")
    ap.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temp folder)")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="write the table and figures here (thalweg.record)")
    a = ap.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="thalweg-zoo-"))
    print(f"runs in {out}")
    print("| run | expected | got | treatment | metric | before | after | after's top |")
    print("|---|---|---|---|---|---|---|---|")
    bad, rows, t0 = 0, [], time.perf_counter()
    from thalweg.record import Record

    rec = Record()
    for p in members(a.names or None):
        r = run_member(p, out, epochs=a.epochs, verify=not a.no_verify, verify_epochs=a.epochs)
        ok = r["got"] == r["expected"] and (r["expected"] != "HEALTHY" or not r["warnings"])
        bad += (not ok) + (r["improved"] is False)
        fix = ", ".join(f"{k}={v}" for k, v in (r["fix"] or {}).items()) or "—"
        row = [r["run"], r["expected"], f"{r['got']}{'' if ok else ' ✗'}", fix, _fmt(r["metric"]), _fmt(r["before"]),
               f"{_fmt(r['after'])}{'' if r['improved'] in (None, True) else ' ✗'}", _fmt(r["after_top"])]
        rows.append(row)
        print("| " + " | ".join(row) + " |", flush=True)
        for k in ("got", "before", "after", "after_top", "confidence"):
            rec.figure(f"{r['run']}.{k}", r[k])
    if a.json:
        rec.table("zoo", ["run", "expected", "got", "treatment", "metric", "before", "after", "after's top"], rows,
                  "llllllll")
        rec.figure("members", len(rows))
        rec.figure("wrong", bad)
        rec.figure("minutes", (time.perf_counter() - t0) / 60)
        print(f"wrote {rec.write(a.json)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
