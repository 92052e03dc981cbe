"""PyTorch's own optimizer test suite, pointed at thalweg's torch twins.

torch's `test/test_optim.py` (class `TestOptimRenewed`) is driven by `optim_db` from
`torch.testing._internal.common_optimizers`, which ships in the torch wheel; the test file
itself does not. This harness runs that file with every `OptimizerInfo` of a rule thalweg
twins swapped for thalweg's class (`--impl thalweg`), or with torch's own classes
(`--impl torch`, the baseline: what torch passes on this machine), and prints pass / fail /
skip / error counts per class, plus the tests that fail for thalweg but pass for torch.

The file is not committed (it is PyTorch's code). It was taken from the pytorch/pytorch
repository, `test/test_optim.py` (the version whose tests match torch 2.13's optim_db:
`TestOptimRenewed` with Muon, named parameters and `test_step_iteration`; 101,878 bytes,
sha256 60d71097cb5fb60a9776020a819993245bd212361b662e72a45610e4460e1225). Its imports of
`optim.test_lrscheduler` / `optim.test_optim` / `optim.test_swa_utils` (scheduler, SWA and
differentiable tests of torch's own classes) are replaced by empty stand-ins here.

    python benchmarks/torch_test_optim.py --file PATH/test_optim.py [--impl thalweg|torch]
        [--classes SGD,Adam,...] [--json OUT.json] [--compare BASELINE.json] [-k SUBSTRING]

Needs `expecttest` (the dev extra) for torch's test utilities.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import re
import sys
import time
import types
import unittest

#: thalweg's torch twins on the flat core (the issue's nine), then the others with a torch twin
NINE = ("SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "NAdam", "RAdam", "Adamax")
OTHERS = ("Adafactor", "LBFGS", "Muon")


def _stub_companions() -> None:
    """test_optim.py imports three companion test modules for their TestCase classes only."""
    pkg = types.ModuleType("optim")
    pkg.__path__ = []  # a package
    sys.modules.setdefault("optim", pkg)
    for mod, cls in (("test_lrscheduler", "TestLRScheduler"), ("test_optim", "TestDifferentiableOptimizer"),
                     ("test_swa_utils", "TestSWAUtils")):
        m = types.ModuleType(f"optim.{mod}")
        setattr(m, cls, type(cls, (), {}))  # not a TestCase: nothing of it runs
        sys.modules[f"optim.{mod}"] = m


def _point_optim_db_at(impl: str, classes: tuple[str, ...]) -> None:
    """Keep the OptimizerInfos of `classes` in optim_db (in place: the test module imports
    the list itself), with thalweg's class in place of torch's for `impl == "thalweg"`."""
    from torch.testing._internal import common_optimizers as co

    import thalweg.optim as to

    kept = []
    for info in co.optim_db:
        name = info.optim_cls.__name__
        if name not in classes:
            continue
        if impl == "thalweg":
            info.optim_cls = getattr(to, name)
        kept.append(info)
    co.optim_db[:] = kept


class _Result(unittest.TextTestResult):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, tuple[str, str]] = {}

    def _name(self, test) -> str:
        return test.id().rsplit(".", 1)[-1]

    def addSuccess(self, test):
        super().addSuccess(test)
        self.outcomes[self._name(test)] = ("pass", "")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes[self._name(test)] = ("fail", self._exc_info_to_string(err, test).strip().splitlines()[-1])

    def addError(self, test, err):
        super().addError(test, err)
        self.outcomes[self._name(test)] = ("error", self._exc_info_to_string(err, test).strip().splitlines()[-1])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.outcomes[self._name(test)] = ("skip", str(reason)[:200])

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.outcomes[self._name(test)] = ("xfail", "")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.outcomes[self._name(test)] = ("xpass", "")


def _class_of(test_name: str, classes: tuple[str, ...]) -> str:
    for c in sorted(classes, key=len, reverse=True):  # AdamW before Adam
        if re.search(rf"_{c}_", test_name + "_"):
            return c
    return "-"


def run(path: str, impl: str, classes: tuple[str, ...], keyword: str | None) -> dict[str, tuple[str, str]]:
    _stub_companions()
    _point_optim_db_at(impl, classes)
    spec = importlib.util.spec_from_file_location("torch_test_optim_file", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    suite = unittest.TestSuite()
    for test in unittest.defaultTestLoader.loadTestsFromModule(module):
        for t in test if isinstance(test, unittest.TestSuite) else [test]:
            name = t.id().rsplit(".", 1)[-1]
            if _class_of(name, classes) == "-" or (keyword and keyword not in name):
                continue  # tests of torch's own classes only (e.g. test_adamw_serialization)
            suite.addTest(t)
    with open(os.devnull, "w") as quiet:
        result = unittest.TextTestRunner(resultclass=_Result, verbosity=0, stream=quiet).run(suite)
    return result.outcomes  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", required=True, help="PyTorch's test/test_optim.py")
    ap.add_argument("--impl", choices=("thalweg", "torch"), default="thalweg")
    ap.add_argument("--classes", default=",".join(NINE), help=f"comma-separated; also: {', '.join(OTHERS)}")
    ap.add_argument("-k", dest="keyword", default=None, help="only tests whose name contains this")
    ap.add_argument("--json", default=None, help="write {test: [outcome, message]} here")
    ap.add_argument("--compare", default=None, help="a --json of the other impl: list where they differ")
    args = ap.parse_args()
    classes = tuple(c for c in args.classes.split(",") if c)
    t0 = time.perf_counter()
    outcomes = run(args.file, args.impl, classes, args.keyword)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, (kind, _) in outcomes.items():
        counts[_class_of(name, classes)][kind] += 1
        counts["all"][kind] += 1
    print(f"torch's test_optim.py, {args.impl}'s classes, {time.perf_counter() - t0:.0f} s")
    for c in (*classes, "all"):
        k = counts[c]
        print(f"  {c:10s} pass {k['pass']:4d}  fail {k['fail']:4d}  error {k['error']:4d}  skip {k['skip']:4d}  "
              f"total {sum(k.values()):4d}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(outcomes, f, indent=1, sort_keys=True)
    if args.compare:
        with open(args.compare) as f:
            other = json.load(f)
        worse = sorted(n for n, (kind, _) in outcomes.items()
                       if kind in ("fail", "error") and other.get(n, ["?"])[0] == "pass")
        print(f"{len(worse)} fail here and pass in {args.compare}:")
        for n in worse:
            print(f"  {n}: {outcomes[n][1][:160]}")


if __name__ == "__main__":
    main()
