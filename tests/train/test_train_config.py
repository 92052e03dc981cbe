"""The run config: the default parses, round-trips, and every bad value is named precisely."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thalweg.train.config import DEFAULT_TOML, ConfigError, dump_config, load_config, parse_config


def _default() -> dict:
    return tomllib.loads(DEFAULT_TOML)


def test_default_parses_and_round_trips() -> None:
    cfg = load_config(None)
    assert cfg.optimizer.name == "adamw"
    assert cfg.data.name == "mnist1d" and cfg.model.name == "mlp"
    assert cfg.schedule.name == "warmup_cosine"
    assert cfg.regularization.label_smoothing > 0 and cfg.regularization.early_stopping.enabled
    again = parse_config(tomllib.loads(dump_config(cfg)))
    assert again == cfg
    assert again.optimizer.hyperparameters() == {"lr": 0.005, "weight_decay": 0.05}


@pytest.mark.parametrize(
    ("section", "key", "value", "field", "words"),
    [
        ("train", "epocs", 3, "epocs", "unknown key"),
        ("train", "epochs", 0, "epochs", "greater than or equal to 1"),
        ("train", "batch_size", "big", "batch_size", "integer"),
        ("model", "dropout", 1.5, "dropout", "less than 1"),
        ("schedule", "name", "cosinus", "name", "warmup_cosine"),
        ("regularization.early_stopping", "patience", 0, "patience", "greater than or equal"),
    ],
)
def test_bad_values_name_section_field_and_value(
    section: str, key: str, value: object, field: str, words: str
) -> None:
    data = _default()
    node = data
    for part in section.split("."):
        node = node[part]
    node[key] = value
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    e = info.value
    assert (e.section, e.field, e.value) == (section, field, value)
    msg = str(e)
    assert f"[{section}] {field}" in msg and repr(value) in msg and words in msg


def test_unknown_section_is_named() -> None:
    data = _default()
    data["optimiser"] = {"name": "sgd"}
    with pytest.raises(ConfigError, match=r"optimiser = \{'name': 'sgd'\}: unknown key"):
        parse_config(data)


@pytest.mark.parametrize(
    ("hp", "value", "words"),
    [
        ("lrr", 0.1, "adamw has no such hyperparameter; it takes: lr, betas"),
        ("lr", -1.0, "must be >= 0.0"),
        ("betas", [0.9, 1.5], "two numbers in [0, 1)"),
        ("amsgrad", "yes", "true or false"),
    ],
)
def test_optimizer_hyperparameters_checked_against_registry(hp: str, value: object, words: str) -> None:
    data = _default()
    data["optimizer"][hp] = value
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert (info.value.section, info.value.field, info.value.value) == ("optimizer", hp, value)
    assert words in str(info.value)


def test_unknown_optimizer_and_any_registry_name() -> None:
    data = _default()
    data["optimizer"] = {"name": "adamm"}
    with pytest.raises(ConfigError, match=r"\[optimizer\] name = 'adamm': unknown optimizer"):
        parse_config(data)
    data["optimizer"] = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}
    assert parse_config(data).optimizer.hyperparameters() == {"lr": 0.1, "momentum": 0.9, "nesterov": True}


def test_run_name_must_be_a_safe_directory_name() -> None:
    data = _default()
    data["name"] = "../escape"
    with pytest.raises(ConfigError, match=r"name = '../escape'"):
        parse_config(data)


def test_overrides_and_missing_or_broken_files(tmp_path: Path) -> None:
    cfg = load_config(None, {"train.epochs": 2, "name": "x"})
    assert cfg.train.epochs == 2 and cfg.name == "x"
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_cli_print_config_and_config_error(tmp_path: Path) -> None:
    from thalweg.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["train", "--print-config"])
    assert out.exit_code == 0
    assert parse_config(tomllib.loads(out.stdout)) == load_config(None)
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nepochs = -3\n')
    out = runner.invoke(app, ["train", str(bad)])
    assert out.exit_code == 2
    assert "[train] epochs = -3" in out.output


@pytest.mark.parametrize("path", sorted(p for p in Path(__file__).parents[2].glob("examples/*.toml")
                                        if not p.name.startswith("meta_")),  # tests/meta checks those
                         ids=lambda p: p.name)
def test_every_example_config_is_valid(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name == path.stem.replace("_", "-")


def test_print_config_lists_every_field_of_the_models() -> None:
    """Generated from the pydantic models, so a new field cannot be left out of --print-config."""
    from thalweg.cli import app
    from thalweg.train.config import RunConfig
    from thalweg.train.config_text import model_fields

    text = CliRunner().invoke(app, ["train", "--print-config"]).stdout
    sections: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        bare = line.lstrip("# ").split("#")[0].strip()
        if bare.startswith("[") and bare.endswith("]"):
            current = bare[1:-1]
        elif "=" in bare:
            sections.setdefault(current, set()).add(bare.split("=")[0].strip())
    fields = model_fields(RunConfig)
    assert {"train.log_every", "train.max_rollbacks", "diagnostics.monitors", "regularization.l2",
            "regularization.mixup_alpha", "diagnostics.tensorboard"} <= set(fields)
    for f in fields:
        section, _, key = f.rpartition(".")
        assert key in sections.get(section, set()), f
    # every optimizer hyperparameter of the default optimizer is shown too (set or as a comment)
    from thalweg.optim import registry

    assert {h.name for h in registry.get("adamw").hyperparameters} <= sections["optimizer"]


def test_diagnostics_switches_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"\[diagnostics\] curvature_every = 30: must be a multiple"):
        parse_config({"train": {"log_every": 20}, "diagnostics": {"curvature_every": 30}})
    with pytest.raises(ConfigError, match=r"\[diagnostics\] tensorboard"):
        parse_config({"diagnostics": {"tensorboard": "yes"}})
    assert parse_config({"diagnostics": {"tensorboard": False}}).diagnostics.tensorboard is False
