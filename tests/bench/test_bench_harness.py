"""A fair harness: every rule runs in the bench as in `thalweg train` and as its paper says —
Muon gets the parameter names, schedule-free rules a constant lr and evaluation at their
averaged weights, LAMB leaves vectors out of its trust ratio and decay, NAdamW is torch's
NAdam with decoupled decay; the character LM is causal and its split fixed."""

from __future__ import annotations

import math

import pytest
import torch

from thalweg.bench import spaces
from thalweg.bench.harness import trial
from thalweg.bench.submissions import Submission, builtin, default_schedule
from thalweg.bench.tasks import charlm, workloads


def _spec(sub: Submission, workload: str, params: dict, steps: int, **kw) -> dict:
    w = workloads.get(workload)
    return {"study": "t", "trial": 0, "phase": "tune", "ruleset": "external", "workload": w.key,
            "workload_ref": w.key, "submission": sub.name, "study_index": 0, "seed": 0, "params": params,
            "config": sub.configure(params), "target": kw.pop("target", None), "metric": w.metric,
            "mode": w.mode, "steps": steps, "eval_every": kw.pop("eval_every", steps), "max_seconds": 600,
            "threads": 1, **kw}  # fmt: skip


def test_muon_gets_the_names_as_in_thalweg_train():
    """The bench builds the optimizer with `thalweg train`'s own function: Muon leaves the
    embeddings and the output head to AdamW (a bare parameter list would orthogonalize them)."""
    from thalweg.optim import registry

    model = charlm.CharTransformer(vocab=20, context=8, d=16, layers=1, heads=2)
    names = {id(p): n for n, p in model.named_parameters()}
    cfg = Submission("muon", "muon").configure({"lr": 0.02})
    opt, _, _ = trial._optimizer_and_schedule(cfg, model, 10, 1)
    on_adamw = {names[id(p)] for p in opt.adamw_params}
    assert {"tok.weight", "pos.weight", "head.weight"} <= on_adamw
    assert "blocks.0.qkv.weight" not in on_adamw and "blocks.0.fc.weight" not in on_adamw
    bare = registry.create("muon", list(model.parameters()), lr=0.02)
    assert "head.weight" not in {names[id(p)] for p in bare.adamw_params}  # the artifact it avoids


def test_schedule_free_runs_a_constant_lr_and_is_evaluated_at_x():
    assert default_schedule("schedulefree_adamw")["final_factor"] == 1.0  # warm-up, then constant
    assert default_schedule("adamw")["final_factor"] == 0.01
    sub = Submission("sf", "schedulefree_sgd")
    spec = _spec(sub, "linreg", {"lr": 0.05, "schedule.warmup_fraction": 0.0}, 40, eval_every=40)
    rec = trial.run_trial(spec)
    assert rec["status"] == "ok", rec.get("error")
    # the same run by hand: the metric at the end is the loss at x (eval mode), not at y
    from thalweg.optim import eval_mode, registry

    torch.manual_seed(0)
    problem = workloads.get("linreg").build(0)
    opt = registry.create("schedulefree_sgd", problem.model.parameters(), lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        problem.loss(None).backward()
        opt.step()
    at_y = problem.evaluate()["excess_loss"]
    with eval_mode(opt):
        at_x = problem.evaluate()["excess_loss"]
    assert rec["final_metric"] == pytest.approx(at_x, rel=1e-5) and at_x != pytest.approx(at_y, rel=1e-3)


def test_lamb_leaves_vectors_out_of_the_trust_ratio_and_the_decay():
    """With `exclude_vectors` (the bench's LAMB), a bias takes LAMB's un-debiased Adam
    direction m/(√v + ε) times lr, no decay; a matrix still gets the trust ratio."""
    assert Submission("lamb", "lamb").fixed["exclude_vectors"] is True
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    from thalweg.optim import registry

    opt = registry.create("lamb", lin.parameters(), lr=0.01, weight_decay=0.5, exclude_vectors=True)
    lin(torch.randn(16, 5)).pow(2).mean().backward()
    gw, gb = lin.weight.grad.clone(), lin.bias.grad.clone()
    opt.step()
    m, v = 0.1 * gb, 0.001 * gb * gb
    torch.testing.assert_close(lin.bias.detach(), b0 - 0.01 * m / (v.sqrt() + 1e-6))
    u = 0.1 * gw / ((0.001 * gw * gw).sqrt() + 1e-6) + 0.5 * w0
    ratio = min(float(w0.norm()), 10.0) / float(u.norm())
    torch.testing.assert_close(lin.weight.detach(), w0 - 0.01 * ratio * u)


def test_nadamw_is_torch_nadam_with_decoupled_decay():
    sub = builtin("nadamw")
    cfg = sub.configure({"lr": 0.01, "1-betas[0]": 0.1, "weight_decay": 0.05})
    assert cfg["optimizer"]["decoupled_weight_decay"] is True
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    b.load_state_dict(a.state_dict())
    ours, _, _ = trial._optimizer_and_schedule(cfg, a, 10, 1)
    ref = torch.optim.NAdam(b.parameters(), lr=0.01, betas=(0.9, 0.999), weight_decay=0.05,
                            decoupled_weight_decay=True)  # fmt: skip
    x = torch.randn(8, 4)
    for _ in range(5):
        for m, o in ((a, ours), (b, ref)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_reviewed_spaces_cover_the_issue_cases_and_edges_are_flagged():
    lr = {n: next(d for d in s if d.name == "lr") for n, s in spaces.SPACES.items()}
    assert lr["adam"].high >= 1.0 and lr["radam"].high >= 0.3  # Rosenbrock/linreg 0.2–1, digits 0.3
    assert lr["lars"].low <= 1e-3  # LARS's vectors take lr itself
    space = [d.to_dict() for d in Submission("adam", "adam").dims()]
    assert spaces.at_edge({"lr": 0.98, "1-betas[0]": 0.1}, space) == ["lr=0.98 (high edge)"]
    assert spaces.at_edge({"lr": 1e-3, "1-betas[0]": 0.1}, space) == []


def test_char_lm_split_is_fixed_and_the_model_causal():
    train, val, vocab = charlm.text_splits()
    assert len(train) + len(val) > 400_000 and abs(len(val) / (len(train) + len(val)) - 0.1) < 1e-3
    assert len(vocab) < 256
    torch.manual_seed(0)
    model = charlm.CharTransformer(len(vocab), context=16, d=16, layers=1, heads=2).eval()
    ids = train[:16].unsqueeze(0)
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % len(vocab)
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[:, :-1], model(changed)[:, :-1])  # no peeking ahead
    w = workloads.get("char_lm", batch_size=2, val_windows=4)
    p = w.build(0)
    m0 = p.evaluate()
    assert m0["val_loss"] == pytest.approx(math.log(len(vocab)), rel=0.05)  # untrained ≈ uniform
    assert w.build(0).evaluate() == m0 and w.group == "real"
