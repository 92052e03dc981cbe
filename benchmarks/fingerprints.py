"""Trajectory fingerprints: every registered rule, with every state dtype it takes, a few steps
on a fixed model and batch; the SHA-256 of the final weights names the trajectory bitwise.

A refactor that moves code without changing arithmetic must leave every fingerprint equal.
Run it on two source trees (PYTHONPATH) and compare:

    PYTHONPATH=/tmp/before/src python benchmarks/fingerprints.py --json before.json
    PYTHONPATH=src python benchmarks/fingerprints.py --compare before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import torch

from thalweg.optim import registry

STEPS = 6
STATE_DTYPES = (None, "bf16", "int8")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
        torch.nn.Linear(16, 3),
    )


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 12, generator=g), torch.randint(0, 3, (32,), generator=g)


def _build(info: registry.OptimizerInfo, model: torch.nn.Module, dtype: str | None):
    kw = {} if dtype is None else {"state_dtype": dtype}
    if dtype is not None and "state_dtype" not in info.options:
        return None
    target = model if (info.needs_model or info.accepts_named) else model.parameters()
    try:
        return registry.create(info.name, target, **kw)
    except (ValueError, TypeError, NotImplementedError):
        return None  # the rule refuses this state dtype


def fingerprint(info: registry.OptimizerInfo, dtype: str | None) -> str | None:
    """The SHA-256 of the weights after `STEPS` steps, or None when the case does not exist."""
    model = _model()
    opt = _build(info, model, dtype)
    if opt is None:
        return None
    x, y = _batch()
    loss_fn = torch.nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward(create_graph=info.name == "adahessian")
        return loss

    for _ in range(STEPS):
        if info.needs_closure:
            opt.step(closure)
        else:
            closure()
            opt.step()
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the fingerprints here")
    ap.add_argument("--compare", help="a JSON file from another tree: report equal / differing")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    prints: dict[str, str] = {}
    for info in registry.infos():
        for dtype in STATE_DTYPES:
            fp = fingerprint(info, dtype)
            if fp is not None:
                prints[f"{info.name}/{dtype or 'fp32'}"] = fp
    print(f"{len(prints)} fingerprints")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(prints, f, indent=1, sort_keys=True)
    if a.compare:
        with open(a.compare) as f:
            other = json.load(f)
        common = sorted(set(prints) & set(other))
        differ = [k for k in common if prints[k] != other[k]]
        only = sorted(set(prints) ^ set(other))
        print(f"{len(common) - len(differ)}/{len(common)} bitwise equal; differ: {differ or 'none'}")
        if only:
            print(f"in one tree only: {only}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
