"""`--set section.field=value` on train, meta and bench (checked by the same models as the
file, a bad field named in one line), each registry entry's default lr, and the one-line
notice when a config switches the optimizer but keeps an lr tuned for another rule."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from thalweg import overrides
from thalweg.cli import app
from thalweg.optim import registry
from thalweg.train import load_config
from thalweg.train.config import lr_notice


def _fails(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    return res.output


def test_set_values_are_toml_else_strings() -> None:
    got = overrides.parse(["train.epochs=5", "optimizer.lr=3e-3", "optimizer.name=muon", "model.norm=\"batch\"",
                           "optimizer.adamw_betas=[0.9, 0.95]", "diagnostics.figures=false", " name = x "])
    assert got == {"train.epochs": 5, "optimizer.lr": 3e-3, "optimizer.name": "muon", "model.norm": "batch",
                   "optimizer.adamw_betas": [0.9, 0.95], "diagnostics.figures": False, "name": "x"}
    cfg = load_config(None, got)
    assert cfg.train.epochs == 5 and cfg.optimizer.name == "muon" and cfg.model.norm == "batch"
    for bad in ("trainepochs", "=3", "train.=3", ".epochs=3"):
        with pytest.raises(overrides.OverrideError, match=r"expected SECTION\.FIELD=VALUE"):
            overrides.parse([bad])


def test_a_bad_set_is_one_line_naming_the_field() -> None:
    assert _fails(["train", "--set", "train.epochz=3"]).strip() == "config error: [train] epochz = 3: unknown key"
    assert "[train] epochs = '5': a number in quotes" in _fails(["train", "--set", 'train.epochs="5"'])
    assert "[optimizer] lrr = 3: adamw has no such hyperparameter" in _fails(["train", "--set", "optimizer.lrr=3"])
    assert "expected SECTION.FIELD=VALUE" in _fails(["train", "--set", "trainepochs"])
    assert "is not a table, so name.x cannot be set" in _fails(["train", "--set", "name.x=1"])
    assert "[meta] iterationz = 3: unknown key" in _fails(["meta", "--set", "meta.iterationz=3"])
    assert "seedz = 3: unknown key" in _fails(["bench", "run", "quick", "--set", "seedz=3"])
    assert "Traceback" not in _fails(["bench", "run", "quick", "--set", "seeds=[1"])


def test_bench_set_is_not_undone_by_an_option_left_out(monkeypatch) -> None:
    """`bench run quick --set studies=5` runs five studies: the `--studies` option, not given,
    must not put the suite's default back; both given and disagreeing is refused."""
    import thalweg.bench.api as api

    got: dict = {}

    class Stop(Exception):
        pass

    def fake(source, **kw):
        got.update(kw)
        raise Stop

    monkeypatch.setattr(api, "run_bench", fake)
    res = CliRunner().invoke(app, ["bench", "run", "quick", "--set", "studies=5", "--set", "trials=4"])
    assert isinstance(res.exception, Stop) and got["studies"] == 5 and got["trials"] == 4
    assert "ruleset" not in got and "seed" not in got  # left out: the suite's own
    got.clear()
    CliRunner().invoke(app, ["bench", "run", "quick", "--studies", "2", "--seed", "1"])
    assert got["studies"] == 2 and got["seed"] == 1
    assert "--set studies=5 and --studies 2 disagree" in _fails(
        ["bench", "run", "quick", "--set", "studies=5", "--studies", "2"])


def test_every_rule_has_a_usable_default_lr() -> None:
    for info in registry.infos():
        if any(h.name == "lr" for h in info.hyperparameters):
            lr = info.default_lr
            assert lr is not None and math.isfinite(lr) and lr > 0, info.name
            info.hyperparameter("lr").check(lr)  # the schema accepts it
    assert registry.get("muon").default_lr == 0.02  # Keller Jordan's; torch.optim.Muon's 1e-3 stays the constructor's
    assert registry.get("sgd").default_lr == 0.1 and registry.get("adam").default_lr == 1e-3


def test_a_config_without_lr_gets_the_rules_default() -> None:
    cfg = load_config(None, {"optimizer": {"name": "sgd"}})
    assert cfg.optimizer.hyperparameters()["lr"] == 0.1
    cfg = load_config(None, {"optimizer": {"name": "muon", "weight_decay": 0.1}})
    assert cfg.optimizer.hyperparameters()["lr"] == 0.02 and lr_notice(cfg.optimizer) is None


def test_a_kept_lr_gets_a_notice() -> None:
    muon = load_config(None, {"optimizer.name": "muon", "optimizer.lr": 1e-3, "optimizer.weight_decay": 0.1})
    note = lr_notice(muon.optimizer)
    assert note is not None and "muon's usual lr is 0.02" in note and "thalweg lr-find" in note
    assert "\n" not in note
    kept = load_config(None, {"optimizer.name": "lion", "optimizer.weight_decay": 0.0})  # the default run's 0.005
    assert "the default run's, tuned for adamw" in lr_notice(kept.optimizer)
    for hp in ({"optimizer.name": "adam", "optimizer.weight_decay": 0.0},  # 0.005 vs 1e-3: within 10×
               {"optimizer.name": "adamw", "optimizer.lr": 0.01},  # adagrad's default, but a common AdamW step
               {"optimizer.name": "sgd", "optimizer.lr": 0.0123, "optimizer.weight_decay": 0.0},  # the user's own
               {}):  # the default run itself
        assert lr_notice(load_config(None, hp).optimizer) is None, hp


@pytest.mark.slow
def test_the_trainer_says_the_notice(tmp_path) -> None:
    res = CliRunner().invoke(app, ["train", "--set", "data.name=digits", "--set", "data.options={}", "--set", "model.width=8", "--set",
                                   "optimizer.name=sgd", "--set", "optimizer.lr=0.001", "--epochs", "1",
                                   "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "sgd's usual lr is 0.1" in res.output
