"""The sources of `make docs`: each names the commands that measure what the docs quote, and
reads their outputs into figures, tables and blocks (docs/record/<name>.json).

Adding one is two lines: a command that writes a `thalweg.record` with `--json {json}` (the
build puts a fresh path there) needs no reader,

    add(Source("memory", "low-precision optimizer state", [f"{PY} benchmarks/memory.py --json {{json}}"]))

and a marked figure in a doc, `<!--fig:memory.adam.bytes_per_param-->…<!--/fig-->`, which
`make docs SOURCES=memory` fills in. Commands are shell lines as a user types them in a
checkout after `make`; the README's own commands are the `readme` source (docs/CONTRACTS.md,
"Docs that stay true").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import marks

PY, TW = ".venv/bin/python", ".venv/bin/thalweg"
Found = dict[str, dict[str, Any]]


class Context:
    """What a reader sees: the source's directory and every command it ran (with its output and,
    for `--json {json}` commands, the record the command wrote)."""

    path: Path
    ran: list[dict[str, Any]]

    def file(self, rel: str) -> Path:
        return self.path / rel

    def load(self, rel: str) -> Any:
        return json.loads((self.path / rel).read_text(encoding="utf-8"))

    def entry(self, command: str) -> dict[str, Any]:
        """The first command that starts with `command` (normalized)."""
        want = marks.normalize(command)
        for e in self.ran:
            if marks.normalize(e["command"]).startswith(want):
                return e
        raise KeyError(f"no command `{command}` ran")

    def output(self, command: str) -> str:
        return self.entry(command)["output"]

    def records(self) -> Found:
        """Every `--json` record of this source merged (later keys win)."""
        out: Found = {"figures": {}, "tables": {}, "blocks": {}}
        for e in self.ran:
            for part in out:
                out[part].update(e.get("json", {}).get(part, {}))
        return out


@dataclass
class Source:
    """Commands run in order in a fresh checkout-like directory, and a reader of their outputs."""

    name: str
    about: str
    commands: list[str] | Callable[[], list[str]]
    collect: Callable[[Context], Found] | None = None
    images: dict[str, str] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    timeout: float = 3600.0

    def command_list(self) -> list[str]:
        return list(self.commands() if callable(self.commands) else self.commands)

    def __post_init__(self) -> None:
        if self.collect is None:
            self.collect = Context.records


REGISTRY: dict[str, Source] = {}


def add(source: Source) -> Source:
    REGISTRY[source.name] = source
    return source


def sources(root: Path) -> dict[str, Source]:
    """Every source; `readme` last: it runs the README's commands that no other source runs."""
    import readers  # noqa: F401  (registers the sources that read runs, benches and pictures)

    others = [s for s in REGISTRY.values() if s.name != "readme"]
    covered = {e for s in others for c in s.command_list() for e in marks.expand(c.replace(" --json {json}", ""),
                                                                                 marks.make_targets(root))}
    shown = marks.commands(root / "README.md")
    todo, seen, failing = [], set(covered), set()
    for c in shown:
        if marks.is_skipped(c.command):
            continue
        exp = tuple(marks.expand(c.command, marks.make_targets(root)))
        if set(exp) <= seen:
            continue
        seen |= set(exp)
        todo.append(c.command)
        if c.expect_failure:
            failing.add(c.command)
    readme = REGISTRY["readme"]
    readme.commands, readme.failing = todo, failing
    return {**{s.name: s for s in others}, "readme": readme}


def doc_runs(name: str, root: Path = marks.ROOT) -> Callable[[], list[str]]:
    """The commands of every `<!--run:NAME-->` transcript in the docs, in order."""
    def cmds() -> list[str]:
        out: list[str] = []
        for p in marks.doc_files(root):
            out += [c.command for c in marks.commands(p) if c.source == name and c.command not in out]
        return out
    return cmds


def parse_number(text: str, pattern: str) -> float:
    m = re.search(pattern, text)
    if m is None:
        raise ValueError(f"{pattern!r} not in the output")
    return float(m.group(1))


# -- benchmarks that write their own record (--json) ----------------------------------------
add(Source("step_time", "make bench: one optimizer step, thalweg against torch.optim and peers (README)",
           [f"{PY} benchmarks/step_time.py --low-precision --json {{json}}"]))
add(Source("memory", "optimizer-state bytes, a step's peak memory and low-precision quality (docs/memory.md)",
           [f"{PY} benchmarks/memory.py state --json state.json", f"{PY} benchmarks/memory.py peak --json peak.json",
            f"{PY} benchmarks/memory.py quality --seeds 3 --json quality.json"],
           lambda ctx: {part: {k: v for f in ("state", "peak", "quality") for k, v in ctx.load(f"{f}.json")[part].items()}
                        for part in ("figures", "tables", "blocks")}))
add(Source("step_time_memory", "peak memory of Adam's first and later steps (benchmarks/step_time.py --memory)",
           [f"{PY} benchmarks/step_time.py --rules adam --rounds 3 --memory --json {{json}}"]))
add(Source("install", "a first install as a user makes it: the wheel, a fresh venv, the README's lines (README)",
           ["make dist", f"{PY} benchmarks/install.py --dist dist --json {{json}}"], timeout=3600))
add(Source("seeds", "make examples: the seeds' worked examples (README)", [f"{PY} examples/seeds.py --json {{json}}"]))
add(Source("curvature", "thalweg.curvature against PyHessian (docs/terrain.md)",
           [f"{PY} benchmarks/curvature.py --json {{json}}", f"{PY} benchmarks/curvature.py --figures images"],
           images={"images/terrain_density.png": "terrain_density.png",
                   "images/terrain_accuracy.png": "terrain_accuracy.png"}))
add(Source("second_order", "second-order optimizers on surfaces and MNIST-1D (docs/second-order.md)",
           [f"{PY} benchmarks/second_order.py --json {{json}}"]))
add(Source("trainer_overhead", "one epoch of the trainer against a hand-written loop (docs/trainer.md)",
           [f"{PY} benchmarks/trainer_overhead.py --json {{json}}"]))
add(Source("matrix_quadratic", "the matrix rules on the matrix quadratic (docs/contenders.md)",
           [f"{PY} benchmarks/matrix_quadratic.py --json {{json}}"]))
add(Source("matrix_quadratic_small", "the same at 32×16 (docs/contenders.md)",
           [f"{PY} benchmarks/matrix_quadratic.py --m 32 --n 16 --steps 200 --json {{json}}"]))
add(Source("step_time_matrix", "the matrix rules' step time (docs/contenders.md)",
           [f"{PY} benchmarks/step_time_matrix.py --rounds 5 --threads 1 --json {{json}}"]))
add(Source("distributed", "2 gloo ranks: one owner per matrix against every rank, FSDP2 AdamW against torch, "
           "memory per rank (docs/distributed.md)", [f"{PY} benchmarks/distributed.py --json {{json}}"]))
add(Source("meta_speed", "meta-update time against a for-loop and learn2learn (docs/meta.md)",
           [f"{PY} benchmarks/meta.py --json {{json}}"]))
add(Source("zoo", "the doctor's sick-run zoo, treated and verified (docs/doctor.md)",
           [f"{PY} examples/sick/zoo.py --json {{json}}"], timeout=7200))
add(Source("doctor_zoo", "the doctor on generated sick runs it never saw: held-out top-1/top-3 before and after, the "
           "confusion matrix, false alarms, verified treatments (docs/doctor.md, README)",
           [f"{PY} benchmarks/doctor_zoo.py --seeds 4000-4083 --before 4afde89 --verify 20 --json {{json}}"],
           timeout=14400))
