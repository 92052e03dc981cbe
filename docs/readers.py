"""The sources whose commands write runs, benches and pictures, and the readers that turn those
outputs into figures and tables (registered into `sources.REGISTRY` on import)."""

from __future__ import annotations

import json
from typing import Any

from sources import PY, TW, Context, Found, Source, add, doc_runs, parse_number

from thalweg.record import Record


def _found(rec: Record) -> Found:
    return rec.to_dict()


def _summary(ctx: Context, run: str) -> dict[str, Any]:
    return ctx.load(f"runs/{run}/summary.json")


def _train_figures(rec: Record, prefix: str, s: dict[str, Any]) -> None:
    for k in ("test_accuracy", "test_loss", "best_value", "best_step", "total_steps", "seconds", "rollbacks",
              "skipped_steps"):
        if s.get(k) is not None:
            rec.figure(f"{prefix}.{k}", s[k])


def _cpu(ctx: Context, command: str) -> float:
    return ctx.entry(command)["cpu_seconds"]


# -- the README -----------------------------------------------------------------------------
def read_readme(ctx: Context) -> Found:
    rec = Record()
    _train_figures(rec, "train", _summary(ctx, "default"))
    rec.figure("x2_lr.diverged_at", int(parse_number(ctx.output(f"{TW} trajectories x2"), r"diverged at step (\d+)")))
    out = ctx.output(f"{TW} inspect runs/default")
    rec.figure("inspect.hvps", int(parse_number(out, r"total Hessian-vector products: (\d+)")))
    rec.figure("inspect.seconds", parse_number(out, r"total Hessian-vector products: \d+ \(([\d.]+) s\)"))
    rec.figure("inspect.wall_seconds", ctx.entry(f"{TW} inspect runs/default")["seconds"])
    rec.figure("inspect.cpu_seconds", _cpu(ctx, f"{TW} inspect runs/default"))
    rec.figure("train.wall_seconds", ctx.entry("make run")["seconds"])
    return _found(rec)


add(Source("readme", "the README's commands, pasted in a fresh shell", [], read_readme,
           images={"runs/default/figures/losses.png": "train_losses.png",
                   "runs/default/figures/accuracy.png": "train_accuracy.png",
                   "runs/default/figures/lr.png": "train_lr.png",
                   "runs/default/landscape/landscape_2d.png": "landscape_2d.png"}))


def read_tests(ctx: Context) -> Found:
    rec, out = Record(), ctx.output("make test")
    rec.figure("passed", int(parse_number(out, r"(\d+) passed")))
    rec.figure("minutes", parse_number(out, r" in ([\d.]+)s") / 60)
    return _found(rec)


add(Source("tests", "make test: the whole suite on this machine", ["make test"], read_tests))


# -- the bench: docs/bench_readers.py ---------------------------------------------------------
import bench_readers  # noqa: E402, F401  (registers bench_quick, bench_standard, bench_calibration)


# -- meta-learning ----------------------------------------------------------------------------
def _adaptation(rec: Record, name: str, s: dict[str, Any], ks: list[int], labels: dict[str, str]) -> None:
    ad, lower = s["adaptation"], s.get("metric", "").endswith("mse")
    meta_methods = [m for m in ad if m not in ("oracle", "pretrained", "scratch")]
    best = {k: (min if lower else max)(ad[m]["mean"][k] for m in meta_methods) for k in ks}
    rows = []
    for m, row in ad.items():
        cells = []
        for k in ks:
            if k >= len(row["mean"]):
                cells.append("")
                continue
            mean, ci = row["mean"][k], row["ci95"][k]
            rec.figure(f"{m}.k{k}", mean)
            rec.figure(f"{m}.k{k}.ci", ci)
            cell = f"{mean:.3f} ± {ci:.3f}"
            cells.append(f"**{cell}**" if k > 0 and m in meta_methods and mean == best[k] else cell)
        rows.append([labels.get(m, m), *cells])
    rec.table(name, ["method", *[f"k = {k}" for k in ks]], rows, "l" + "r" * len(ks))
    rec.figure("test_tasks", s["test_tasks"])


LABELS = {"maml": "MAML (second order)", "fomaml": "first-order MAML", "reptile": "Reptile",
          "pretrained": "pretrained, fine-tuned", "oracle": "oracle (given A, φ)",
          "scratch": "untrained initialization (`scratch`), fine-tuned"}


def read_meta_sinusoid(ctx: Context) -> Found:
    rec, s = Record(), _summary(ctx, "meta")
    _adaptation(rec, "sinusoid", s, [0, 1, 2, 5, 10], LABELS)
    f = rec.figures
    rec.figure("pretrained_over_maml.k1", f["pretrained.k1"] / f["maml.k1"])
    rec.figure("pretrained_over_maml.k10", f["pretrained.k10"] / f["maml.k10"])
    for k in (1, 10):
        rec.figure(f"fomaml_worse_pct.k{k}", 100 * (f[f"fomaml.k{k}"] / f[f"maml.k{k}"] - 1))
    run = ctx.entry(f"{TW} meta")
    rec.figure("wall_minutes", run["seconds"] / 60)
    rec.figure("cpu_seconds", run["cpu_seconds"])
    return _found(rec)


def read_meta_fewshot(ctx: Context) -> Found:
    rec, s = Record(), _summary(ctx, "meta-fewshot-digits")
    labels = {**LABELS, "pretrained": "pretrained (task mixture, labels in class order), fine-tuned"}
    _adaptation(rec, "fewshot", s, [0, 1, 10], labels)
    f = rec.figures
    for k in (1, 10):
        rec.figure(f"maml_minus_pretrained_points.k{k}", 100 * (f[f"maml.k{k}"] - f[f"pretrained.k{k}"]))
    run = ctx.entry(f"{TW} meta examples/meta_fewshot_digits.toml")
    rec.figure("wall_minutes", run["seconds"] / 60)
    rec.figure("cpu_seconds", run["cpu_seconds"])
    return _found(rec)


add(Source("meta_sinusoid", "thalweg meta: the embedded default, 10-shot sinusoids (README, docs/meta.md)",
           [f"{TW} meta"], read_meta_sinusoid,
           images={"runs/meta/figures/adaptation.png": "meta_sinusoid_adaptation.png",
                   "runs/meta/figures/fits.png": "meta_sinusoid_fits.png",
                   "runs/meta/figures/meta_training.png": "meta_sinusoid_training.png"}, timeout=7200))
add(Source("meta_fewshot", "thalweg meta on 5-way 5-shot digits with held-out classes (README, docs/meta.md)",
           [f"{TW} meta examples/meta_fewshot_digits.toml"], read_meta_fewshot,
           images={"runs/meta-fewshot-digits/figures/adaptation.png": "meta_fewshot_digits_accuracy.png"},
           timeout=7200))


# -- runs the docs show ---------------------------------------------------------------------------
def read_runs(*runs: tuple[str, str]) -> Any:
    """A reader of each (run directory, figure prefix)'s summary.json."""
    def read(ctx: Context) -> Found:
        rec = Record()
        for run, prefix in runs:
            _train_figures(rec, prefix, _summary(ctx, run))
        return _found(rec)
    return read


def read_guard(ctx: Context) -> Found:
    rec = Record()
    _train_figures(rec, "run", _summary(ctx, "diverge-and-recover"))
    events = [json.loads(ln) for ln in ctx.file("runs/diverge-and-recover/metrics.jsonl").read_text().splitlines()]
    bad = [e for e in events if e.get("event") == "nonfinite"]
    back = [e for e in events if e.get("event") == "rollback"]
    rec.figure("nonfinite_steps", len(bad))
    rec.figure("last_nonfinite_step", max(e["step"] for e in bad))
    rec.figure("rollback_to_step", back[0].get("to_step", back[0].get("step")) if back else -1)
    return _found(rec)


add(Source("doctor_demo", "the doctor on a run it used to miss (docs/doctor.md)", doc_runs("doctor_demo")))
add(Source("csv", "training on a CSV file (docs/data.md)", doc_runs("csv"), read_runs(("csv-regression", "csv"))))
add(Source("guard", "a run that blows up, rolls back and recovers (docs/trainer.md)",
           [f"{TW} train examples/diverge_and_recover.toml"], read_guard,
           images={"runs/diverge-and-recover/figures/losses.png": "train_guard.png",
                   "runs/diverge-and-recover/figures/lr.png": "train_guard_lr.png"}))
add(Source("examples_train", "the example configs on digits (docs/trainer.md)",
           [f"{TW} train examples/digits_sgd_nesterov.toml", f"{TW} train examples/digits_kfac.toml"],
           read_runs(("digits-sgd-nesterov", "sgd_nesterov"), ("digits-kfac", "kfac"))))
add(Source("contenders_train", "the matrix rules' example configs, 5 epochs (docs/contenders.md)",
           [f"{TW} train examples/mnist1d_{n}.toml --epochs 5" for n in ("muon", "shampoo", "soap", "adafactor")],
           read_runs(*[(f"mnist1d-{n}", n) for n in ("muon", "shampoo", "soap", "adafactor")])))
#: the elementwise contenders' example configs (docs/contenders.md, "Training")
ELEMENTWISE = ("nadam", "radam", "adamax", "lion", "schedulefree_adamw", "schedulefree_sgd", "prodigy", "lamb", "lars")


def read_elementwise(ctx: Context) -> Found:
    rec = Record()
    cells = []
    for n in ELEMENTWISE:
        s = _summary(ctx, f"mnist1d-{n.replace('_', '-')}")
        _train_figures(rec, n, s)
        cells.append(f"{rec.figures[f'{n}.test_accuracy']:.3f}")
    rec.table("accuracy", ["NAdamW", "RAdam", "Adamax", "Lion", "SF-AdamW", "SF-SGD", "Prodigy", "LAMB (b 1024)",
                           "LARS (b 1024)"], [cells], "r" * len(cells))
    return _found(rec)


add(Source("elementwise_train", "the elementwise contenders' example configs (docs/contenders.md)",
           [f"{TW} train examples/mnist1d_{n}.toml" for n in ELEMENTWISE], read_elementwise))
add(Source("recipes", "the MNIST-1D recipes over seeds 0, 1, 2 (README, docs/bench.md)",
           [f"{PY} benchmarks/recipe_seeds.py --json {{json}}"], timeout=7200))


def read_inspect(ctx: Context) -> Found:
    rec = Record()
    full = json.loads(ctx.output(f"{TW} inspect runs/default --full"))
    obj = json.loads(ctx.output(f"{TW} inspect runs/default --loss objective"))
    rec.figure("full.lambda_min", full["bottom"]["eigenvalues"][0])
    rec.figure("full.residual_min", full["bottom"]["residuals"][0])
    rec.figure("full.hvps", full["total_hvps"])
    rec.figure("objective.loss", obj["loss"])
    rec.figure("plain.loss", full["loss"])
    rec.figure("params", full["num_params"])
    return _found(rec)


add(Source("inspect", "thalweg inspect --full and --loss objective on the default run (docs/terrain.md)",
           [f"{TW} train -q", f"{TW} inspect runs/default --full --json",
            f"{TW} inspect runs/default --loss objective --no-density --json"], read_inspect))

#: docs/contenders.md's pictures of the elementwise contenders (name → trajectories arguments)
_CONTENDER_PICTURES = {
    "contenders_adam_family_ravine": "ravine -O adam:lr=0.1 -O nadam:lr=0.1 -O radam:lr=0.1 -O adamax:lr=0.1 "
                                     "-O lion:lr=0.05 --steps 100",
    "contenders_free_ravine": "ravine -O adam:lr=0.1 -O schedulefree_adamw:lr=0.5 -O schedulefree_sgd:lr=0.2 "
                              "-O prodigy -O lamb:lr=0.05 -O lars:lr=0.05 --steps 100",
    "contenders_adam_family_rosenbrock": "rosenbrock -O adam:lr=0.03 -O nadam:lr=0.03 -O radam:lr=0.01 "
                                         "-O adamax:lr=0.03 -O lion:lr=0.003 --start=-1.5,2 --steps 3000",
    "contenders_free_rosenbrock": "rosenbrock -O adam:lr=0.03 -O schedulefree_adamw:lr=0.1 "
                                  "-O schedulefree_sgd:lr=0.002 -O prodigy -O lamb:lr=0.01 -O lars:lr=0.0003 "
                                  "--start=-1.5,2 --steps 3000",
}
_TRAJ = {f"trajectories/{n}.png": f"{n}.png" for n in ("traj_lr_panel", "traj_1d_hazards", "traj_ravine",
                                                          "traj_rosenbrock", "traj_saddle", "traj_saddle_surface")}
add(Source("pictures", "the pictures of docs/pictures.md, second-order.md and contenders.md",
           [f"{TW} train -q", f"{TW} landscape runs/default --dim 1 --span 0.5", f"{TW} lr-find --steps 200",
            f"{TW} trajectories --gallery",
            f"{TW} trajectories sinsin -O newton -O \"newton:mode='saddle_free'\" -O lbfgs:max_iter=1 "
            "-O adahessian:lr=0.3 -O sgd:lr=0.1,momentum=0.9 --start=0.3,0.2 --steps 40",
            f"{TW} trajectories ravine -O adam:lr=0.1 -O adafactor:lr=0.3 -O \"muon:lr=0.1,split='all'\" "
            "-O shampoo:lr=0.1 -O soap:lr=0.1,weight_decay=0.0 --steps 100 --name contenders_matrix_ravine",
            f"{TW} trajectories rosenbrock -O adam:lr=0.03 -O adafactor:lr=0.1 -O \"muon:lr=0.003,split='all'\" "
            "-O shampoo:lr=0.03 -O soap:lr=0.03,weight_decay=0.0 --start=-1.5,2 --steps 3000 "
            "--name contenders_matrix_rosenbrock",
            *[f"{TW} trajectories {c} --name {n}" for n, c in _CONTENDER_PICTURES.items()],
            f"{PY} docs/pipeline_figures.py images --json {{json}}"], None,
           images={**_TRAJ, "runs/default/landscape/landscape_1d.png": "landscape_1d.png",
                   "lr_find/lr_find.png": "lr_find.png", "trajectories/sinsin.png": "second_order_sinsin.png",
                   "trajectories/contenders_matrix_ravine.png": "contenders_matrix_ravine.png",
                   "trajectories/contenders_matrix_rosenbrock.png": "contenders_matrix_rosenbrock.png",
                   **{f"trajectories/{n}.png": f"{n}.png" for n in _CONTENDER_PICTURES},
                   **{f"images/{n}.png": f"{n}.png" for n in ("schedule_zoo", "schedule_seed", "init_depth_variance")}}))

