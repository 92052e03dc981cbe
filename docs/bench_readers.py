"""The bench's sources (README, docs/bench.md): the quick suite run twice with different seeds
(the stability check), the standard suite with its self-tuning run and the hand-picked lr
sweep, and the calibration record the targets come from."""

from __future__ import annotations

import math
from typing import Any

from sources import PY, TW, Context, Found, Source, add

from thalweg.record import Record

LABELS = {"char_lm": "char LM", "mnist1d_cnn": "MNIST-1D CNN", "mnist1d_gru": "MNIST-1D GRU",
          "mnist1d_mlp": "MNIST-1D MLP", "digits_cnn": "digits CNN", "digits_logreg": "digits logreg",
          "rosenbrock": "Rosenbrock", "quadratic": "quadratic", "linreg": "linreg", "deep_linear": "deep linear"}  # fmt: skip
MARK = {"reached": "", "too slow": " (too slow)", "inconclusive": " (split)", "never reached": " (never)"}


def _records(ctx: Context, bench: str) -> list[dict[str, Any]]:
    from thalweg.bench.results import read_results

    return read_results(ctx.file(f"bench/{bench}/results.jsonl"))


def _cell(summary: Any, sub: str, wl: str) -> str:
    c = summary.cells[sub].get(wl)
    if c is None:
        return "—"
    t = f"{c.time:.0f}" if math.isfinite(c.time) else "∞"
    return f"{t}{MARK[summary.verdicts[sub][wl]]} {c.studies_reached}/{len(c.study_times)}"


def score_table(rec: Record, name: str, records: list[dict[str, Any]], prefix: str, ruleset: str = "external") -> Any:
    """A table: score and rank in steps with 95 % intervals, then per workload the median
    steps to the target, its verdict and the studies that reached it; figures per optimizer."""
    from thalweg.bench import uncertainty

    s = uncertainty.summarize(records, ruleset)
    wls = [w for w in LABELS if any(w in per for per in s.cells.values())]
    rows = []
    for sub in sorted(s.score, key=lambda k: (s.rank[k], k)):
        (lo, hi), (rlo, rhi) = s.score_ci[sub], s.rank_ci[sub]
        rows.append([sub, f"{s.score[sub]:.3f} [{lo:.2f}, {hi:.2f}]", f"{s.rank[sub]:g} [{rlo:g}, {rhi:g}]",
                     *(_cell(s, sub, w) for w in wls)])  # fmt: skip
        for k, v in (("score", s.score[sub]), ("score_lo", lo), ("score_hi", hi), ("rank", s.rank[sub]),
                     ("rank_lo", rlo), ("rank_hi", rhi)):  # fmt: skip
            rec.figure(f"{prefix}.{sub}.{k}", v)
    rec.table(name, ["optimizer", "score [95 %]", "rank [95 %]", *(LABELS[w] for w in wls)], rows,
              "lrr" + "r" * len(wls))  # fmt: skip
    ahead = s.ahead_of(0.95)
    rec.figure(f"{prefix}.ahead", "; ".join(f"{a} ahead of {', '.join(bs)}" for a, bs in ahead.items()) or "none")
    rec.figure(f"{prefix}.best_vs_worst", s.verdict())
    return s


def _with_record(rec: Record, ctx: Context, prefix: str) -> Found:
    """`rec` plus the record a `--json {json}` command of the source wrote (its figures under
    `prefix.`)."""
    found = rec.to_dict()
    for part, values in ctx.records().items():
        found[part].update({f"{prefix}.{k}" if part == "figures" else k: v for k, v in values.items()})
    return found


def _timing(rec: Record, ctx: Context, command: str, key: str) -> None:
    e = ctx.entry(command)
    rec.figure(f"{key}.wall_minutes", e["seconds"] / 60)
    rec.figure(f"{key}.cpu_seconds", e["cpu_seconds"])
    rec.figure(f"{key}.cpu_minutes_on_2_cores", e["cpu_seconds"] / 120)


# -- quick, twice -----------------------------------------------------------------------------
def _part(rec: Record, ctx: Context, command: str, prefix: str) -> None:
    """The record `command` wrote with `--json`: its figures under `prefix.`, its tables as they are."""
    data = ctx.entry(command).get("json") or {}
    for k, v in (data.get("figures") or {}).items():
        rec.figures[f"{prefix}.{k}"] = v
    rec.tables.update(data.get("tables") or {})


def read_bench_quick(ctx: Context) -> Found:
    from thalweg.bench import scoring

    records = _records(ctx, "quick")
    rec = Record()
    score_table(rec, "scores", scoring.real(records), "quick")
    if scoring.toy(records):
        score_table(rec, "toy", scoring.toy(records), "quick_toy")
    score_table(rec, "scores_seed1", scoring.real(_records(ctx, "quick-seed1")), "quick_seed1")
    rec.figure("trials", len(records))
    rec.figure("optimizers", len({r["submission"] for r in records}))
    rec.figure("workloads", len({r["workload"] for r in records}))
    rec.figure("real_workloads", len({r["workload"] for r in scoring.real(records)}))
    _timing(rec, ctx, f"{TW} bench run quick", "run")
    _timing(rec, ctx, f"{TW} bench run quick --seed 1", "run_seed1")
    _part(rec, ctx, f"{PY} benchmarks/bench_stability.py", "stability")
    _part(rec, ctx, f"{PY} benchmarks/bench_sweep.py", "sweep")
    return rec.to_dict()


add(Source("bench_quick", "make bench-quick twice (seeds 0 and 1): scores with intervals and their stability; "
           "the hand-picked lr sweep against the first (README, docs/bench.md)",
           [f"{TW} bench run quick", f"{TW} bench run quick --seed 1 --name quick-seed1",
            f"{PY} benchmarks/bench_stability.py bench/quick bench/quick-seed1 --json {{json}}",
            # exit 1: a pair reached by hand and in no study (the table says which); 2+: a crash
            f"{PY} benchmarks/bench_sweep.py --suite quick --bench bench/quick --bench bench/quick-seed1 "
            f"--json {{json}} || [ $? -eq 1 ]",
            f"{TW} bench report bench/quick"],
           read_bench_quick,
           images={"bench/quick/figures/profile.png": "bench_profile.png",
                   "bench/quick/figures/sensitivity.png": "bench_sensitivity.png"}, timeout=7200))


# -- standard ---------------------------------------------------------------------------------
ADAM_FAMILY = ("adamw", "nadamw", "radam")


def _ci(x: tuple[float, float], fmt: str = ".2f") -> str:
    def one(v: float) -> str:
        return "∞" if v == math.inf else f"{v:{fmt}}"

    return f"[{one(x[0])}, {one(x[1])}]"


def _speed(s: Any, sub: str, wl: str) -> tuple[float, float, float] | None:
    from thalweg.bench import uncertainty

    if wl not in s.cells.get(sub, {}) or wl not in s.cells.get("adamw", {}):
        return None
    return uncertainty.speedup(s.cells["adamw"][wl], s.cells[sub][wl])


def _geo_gain(s: Any, best: str, base: str) -> float:
    """How many times fewer steps `best` needs than `base`: the geometric mean over the workloads
    both reached (the point estimate alone)."""
    from thalweg.bench import uncertainty

    return uncertainty.geo_speedup(s.cells.get(base, {}), s.cells.get(best, {}), replicates=0)[0]


def _literature(rec: Record, s: Any, self_s: Any) -> None:
    """docs/bench.md's literature table: each published finding, what this bench measures on
    its real workloads (steps to the target, 95 % bootstrap intervals), and the verdict."""
    rows = []
    fam = [f for f in ADAM_FAMILY if f in s.score]
    overlap = max(s.score_ci[f][0] for f in fam) <= min(s.score_ci[f][1] for f in fam)
    rows.append(["Tuned Adam-family methods perform about equally (Schmidt et al. 2021, *Descending "
                 "through a Crowded Valley*)",
                 "; ".join(f"{f} {s.score[f]:.2f} {_ci(s.score_ci[f])}" for f in fam),
                 "reproduced: the intervals overlap" if overlap else "not reproduced: the intervals separate"])
    top = min(s.rank, key=lambda q: (s.rank[q], q))
    n_top = s.rank_ci["nadamw"][0] <= s.rank_ci[top][1]
    rows.append(["NAdamW is a strong baseline (AlgoPerf: Dahl et al. 2023; Kasimbeg et al. 2025)",
                 f"nadamw rank {s.rank['nadamw']:g} {_ci(s.rank_ci['nadamw'], 'g')} of {len(s.score)}; "
                 f"first: {top} {_ci(s.rank_ci[top], 'g')}",
                 "reproduced: its rank interval reaches the first's" if n_top else "not reproduced"])
    if self_s is not None and "schedulefree_adamw" in self_s.score:
        k = "schedulefree_adamw"
        best = min(self_s.rank, key=lambda q: (self_s.rank[q], q))
        ok = self_s.rank_ci[k][0] <= 1.5
        rows.append(["Schedule-free AdamW is strong when self-tuned (AlgoPerf 2024 self-tuning winner; "
                     "Defazio et al. 2024)",
                     f"self-tuning (defaults, 1.5× budget): {k} {self_s.score[k]:.2f} {_ci(self_s.score_ci[k])}, "
                     f"rank {self_s.rank[k]:g} {_ci(self_s.rank_ci[k], 'g')}; first: {best}",
                     "reproduced: it can rank first" if ok else "not reproduced"])
    parts, ahead = [], []
    for sub in ("muon", "soap"):
        sp = _speed(s, sub, "char_lm")
        if sp is not None:
            parts.append(f"{sub} {sp[0]:.2f}× {_ci(sp[1:])}")
            ahead.append(sp[1] > 1.0)
    if parts:
        rows.append(["Matrix-based optimizers are the fastest on transformers, ≤ 1.4× a well-tuned AdamW "
                     "at 0.1 B parameters (Wen et al. 2025, *Fantastic Pretraining Optimizers*)",
                     "char LM, steps-to-target speedup over AdamW: " + "; ".join(parts),
                     "reproduced: " + ", ".join(q for q, a in zip(("muon", "soap"), ahead, strict=False) if a)
                     + " ahead" if any(ahead) else "not reproduced: no interval above 1×"])
    if "adamw_constant" in s.score and "adamw" in s.cells:
        from thalweg.bench import uncertainty

        best = max((q for q in s.score if not q.startswith("adamw")), key=lambda q: (s.score[q], q))
        g_cos, g_const = _geo_gain(s, best, "adamw"), _geo_gain(s, best, "adamw_constant")
        # the gain against a constant lr over the gain against the decayed one is how many times
        # faster AdamW is with the decay: the finding holds where that is clearly above 1
        d, lo, hi = uncertainty.geo_speedup(s.cells["adamw_constant"], s.cells["adamw"])
        verdict = ("reproduced: the decay makes AdamW faster, interval above 1×" if lo > 1 else
                   "not reproduced: the decay makes AdamW slower" if hi < 1 else
                   "not told apart: the interval spans 1×")  # fmt: skip
        rows.append(["Gains over AdamW shrink against a fully decayed schedule (Kaddour et al. 2023, "
                     "*No Train No Gain*)",
                     f"{best} (the best other rule), geometric-mean speedup over AdamW with cosine decay "
                     f"{g_cos:.2f}×, over AdamW at a constant lr {g_const:.2f}×; AdamW with the decay vs "
                     f"without, steps: {d:.2f}× {_ci((lo, hi))}", verdict])
        rec.figure("lit.gain_over_cosine", g_cos)
        rec.figure("lit.gain_over_constant", g_const)
        rec.figure("lit.decay_speedup", d)
    rec.table("literature", ["published finding", "this bench (real workloads, steps; 95 % intervals)", "verdict"],
              rows, "lll")


def read_bench_standard(ctx: Context) -> Found:
    from thalweg.bench import scoring

    records = _records(ctx, "standard")
    rec = Record()
    s = score_table(rec, "scores", scoring.real(records), "standard")
    self_s = None
    if any(r.get("ruleset") == "self" for r in records):
        self_s = score_table(rec, "self", scoring.real(records), "standard_self", ruleset="self")
    _literature(rec, s, self_s)
    per: dict[tuple[str, str], list[float]] = {}
    for r in scoring.real(records):
        v = (r.get("cpu") or {}).get("per_step")
        if v and r.get("ruleset") == "external":
            per.setdefault((r["submission"], r["workload"]), []).append(v)
    wls = [w for w in LABELS if any(w == k[1] for k in per)]
    rows = [[sub, *(f"{1e3 * sorted(per[(sub, w)])[len(per[(sub, w)]) // 2]:.1f}" if (sub, w) in per else "—"
                    for w in wls)] for sub in sorted({k[0] for k in per})]  # fmt: skip
    rec.table("cpu_ms_per_step", ["optimizer", *(LABELS[w] for w in wls)], rows)
    rec.figure("trials", len(records))
    rec.figure("reached_cells", sum(v == "reached" for per_w in s.verdicts.values() for v in per_w.values()))
    rec.figure("cells", sum(len(per_w) for per_w in s.verdicts.values()))
    _timing(rec, ctx, f"{TW} bench run standard", "run")
    _timing(rec, ctx, f"{TW} bench run standard --ruleset self", "run_self")
    return _with_record(rec, ctx, "sweep")  # bench_sweep.py's record


add(Source("bench_standard", "thalweg bench run standard (external and self-tuning) and the hand-picked lr "
           "sweep against it (README, docs/bench.md)",
           [f"{TW} bench run standard", f"{TW} bench run standard --ruleset self",
            f"{PY} benchmarks/bench_sweep.py --suite standard --bench bench/standard --json {{json}}"],
           read_bench_standard, images={"bench/standard/figures/profile.png": "bench_standard_profile.png"},
           timeout=6 * 3600))


# -- the calibration record -------------------------------------------------------------------
def read_bench_calibration(ctx: Context) -> Found:
    rec = Record()
    data = ctx.load("src/thalweg/bench/calibration.json")
    rows = []
    for key, w in data["workloads"].items():
        cells = []
        for b in ("adamw", "nadamw", "sgd_nesterov"):
            x = w["baselines"].get(b) or {}
            seeds = [v for v in x.get("seeds") or [] if v is not None]
            cells.append("—" if x.get("median") is None else
                         f"{x['median']:.4g} [{min(seeds):.4g}, {max(seeds):.4g}]")  # fmt: skip
        rows.append([LABELS.get(key, key), w["metric"], f"{'≤' if w['mode'] == 'min' else '≥'} {w['value']:.4g}",
                     str(w["calibration_steps"]), *cells])  # fmt: skip
        rec.figure(f"{key}.target", w["value"])
    rec.table("targets", ["workload", "metric", "target", "baseline steps", "AdamW: median [min, max] over seeds",
                          "NAdamW", "SGD-Nesterov"], rows, "llrrrrr")  # fmt: skip
    rec.figure("cpu_minutes", data["trial_cpu_seconds"] / 60)
    rec.figure("wall_hours", data["wall_seconds"] / 3600)
    rec.figure("trials", data["trials"])
    for k, v in data["protocol"].items():
        rec.figure(f"protocol.{k}", ", ".join(v) if isinstance(v, list) else v)
    rec.block("command", data["command"])
    return rec.to_dict()


add(Source("bench_calibration", "the targets' calibration record, src/thalweg/bench/calibration.json (made by "
           "`thalweg bench calibrate`; docs/bench.md); `bench workloads` lists the targets it sets",
           [f"{TW} bench workloads"], read_bench_calibration))


# -- replicates: how much one run of the quick suite tells ------------------------------------
REPLICATES = f"{PY} benchmarks/bench_replicates.py bench/quick-x24"


def read_bench_replicates(ctx: Context) -> Found:
    from thalweg.bench import scoring

    rec = Record()
    _timing(rec, ctx, f"{TW} bench run quick --set studies=24", "run")
    _part(rec, ctx, REPLICATES, "runs3x5")  # the first command that starts so: the one without --merge
    for command, key in ((f"{REPLICATES} --merge 2", "runs3x10"), (f"{REPLICATES} --studies 8 --draws", "drawn8"),
                         (f"{REPLICATES} --studies 8", "runs8x5"), (f"{REPLICATES} --draws", "drawn3")):
        data = ctx.entry(command).get("json") or {}
        for k, v in (data.get("figures") or {}).items():
            rec.figures[f"{key}.{k}"] = v
    records = _records(ctx, "quick-x24")
    rec.figure("trials", len(records))
    # the 24 studies as one run: what a user who runs `--set studies=24` gets
    s = score_table(rec, "whole", scoring.real(records), "whole")
    rec.figure("whole.separated", s.separated())
    return rec.to_dict()


add(Source("bench_replicates", "the quick suite with 24 studies, cut into 8 independent runs of AlgoPerf's 3 "
           "(and 3 of the suite's 8): how far its ranking moves from run to run, and whether the bootstrap's "
           "intervals hold (docs/bench.md)",
           [f"{TW} bench run quick --set studies=24 --seed 100 --name quick-x24 --quiet",
            f"{REPLICATES} --json {{json}}", f"{REPLICATES} --merge 2 --json {{json}}",
            f"{REPLICATES} --studies 8 --json {{json}}", f"{REPLICATES} --draws 200 --json {{json}}",
            f"{REPLICATES} --studies 8 --draws 200 --json {{json}}"],
           read_bench_replicates, timeout=3 * 3600))
