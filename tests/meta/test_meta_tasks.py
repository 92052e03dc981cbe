"""Task distributions: episodes are a pure function of the seed, have the promised shapes,
ranges and labels; few-shot classes stay disjoint; bad settings name their config field."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from thalweg.cli import app
from thalweg.data import load_dataset
from thalweg.meta import (
    MAML,
    FewShot,
    MetaError,
    Reptile,
    Sinusoid,
    augment_classes,
    episode_seed,
    fewshot_distributions,
)
from thalweg.meta.config import build_tasks, load_meta_config, make_learner, parse_meta_config
from thalweg.train import ConfigError


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(
        (a.support_x, a.support_y, a.query_x, a.query_y), (b.support_x, b.support_y, b.query_x, b.query_y), strict=True))


def test_sinusoid_episodes_are_reproducible_and_follow_the_paper() -> None:
    d = Sinusoid(k_shot=10, k_query=15)
    a, b = d.sample(50, seed=7), d.sample(50, seed=7)
    assert same(a, b) and not same(a, d.sample(50, seed=8))
    assert a.support_x.shape == (50, 10, 1) and a.query_y.shape == (50, 15, 1)
    amp, ph = a.info["amplitude"], a.info["phase"]
    assert amp.min() >= 0.1 and amp.max() <= 5.0 and ph.min() >= 0 and ph.max() <= math.pi
    assert a.support_x.abs().max() <= 5.0
    torch.testing.assert_close(a.query_y, amp.view(-1, 1, 1) * torch.sin(a.query_x - ph.view(-1, 1, 1)))
    oracle = Sinusoid.with_descriptors(a)
    assert oracle.support_x.shape == (50, 10, 3) and torch.equal(oracle.support_x[:, :, 1], amp[:, None].expand(-1, 10))
    seeds = {episode_seed(0, s, i) for s in range(3) for i in range(1000)}
    assert len(seeds) == 3000 and all(0 <= s < 2**63 for s in seeds)


def test_fewshot_episodes_have_disjoint_classes_and_consistent_labels() -> None:
    splits = load_dataset("digits", seed=0)
    dists = fewshot_distributions(splits, n_way=5, k_shot=2, k_query=3, train_classes=[0, 1, 2, 3, 4],
                                  test_classes=[5, 6, 7, 8, 9])
    ep = dists["test"].sample(20, seed=1)
    assert same(ep, dists["test"].sample(20, seed=1))
    assert ep.support_x.shape == (20, 10, 64) and ep.query_y.shape == (20, 15)
    assert set(ep.info["classes"].flatten().tolist()) <= {5, 6, 7, 8, 9}
    assert set(dists["train"].sample(20, seed=1).info["classes"].flatten().tolist()) <= {0, 1, 2, 3, 4}
    # every example is an example of the class its label stands for
    x_all = torch.cat([splits.x_train, splits.x_val, splits.x_test])
    y_all = torch.cat([splits.y_train, splits.y_val, splits.y_test])
    label_of: dict[tuple[float, ...], set[int]] = {}
    for x, y in zip(x_all.tolist(), y_all.tolist(), strict=True):
        label_of.setdefault(tuple(x), set()).add(y)
    for t in range(5):
        for x, lab in zip(ep.query_x[t].tolist() + ep.support_x[t].tolist(),
                          ep.query_y[t].tolist() + ep.support_y[t].tolist(), strict=True):
            assert ep.info["classes"][t, lab].item() in label_of[tuple(x)]
    fixed = dists["train"].sample(20, seed=1, shuffle_labels=False).info["classes"]
    assert torch.equal(fixed, fixed.sort(dim=1).values)
    # meta-validation: train classes, but only examples held out of meta-training
    seen = {tuple(x) for x in splits.x_train.tolist()}
    assert not any(tuple(x) in seen for x in dists["val"].x.tolist())


def test_rotations_make_four_classes_of_each() -> None:
    x = torch.arange(2 * 64, dtype=torch.float32).view(2, 64)
    xa, ya, m = augment_classes(x, torch.tensor([3, 7]), "rotate")
    assert m == 4 and ya.tolist() == [12, 28, 13, 29, 14, 30, 15, 31]
    assert torch.equal(xa[2].view(8, 8), torch.rot90(x[0].view(8, 8), 1))
    with pytest.raises(MetaError, match="square images"):
        augment_classes(torch.zeros(3, 40), torch.zeros(3, dtype=torch.long), "rotate")


def test_library_errors_name_the_argument() -> None:
    x, y = torch.zeros(30, 4), torch.arange(30) % 3
    with pytest.raises(MetaError, match="n_way = 4: larger than the 3 classes"):
        FewShot(x, y, [0, 1, 2], n_way=4)
    with pytest.raises(MetaError, match="k_shot = 8: k_shot \\+ k_query = 11 but class 0 has only 10"):
        FewShot(x, y, [0, 1, 2], n_way=3, k_shot=8, k_query=3)
    with pytest.raises(MetaError, match="inner_steps = 0: maml needs an integer >= 1"):
        MAML(torch.nn.Linear(1, 1), inner_steps=0)
    with pytest.raises(MetaError, match="learn_inner_lr"):
        Reptile(torch.nn.Linear(1, 1), learn_inner_lr=True)


@pytest.mark.parametrize(("change", "where"), [
    ({"task": {"name": "fewshot", "k_shot": 40, "k_query": 15}, "meta": {"methods": ["maml"]}}, "[task] k_shot = 40"),
    ({"task": {"name": "fewshot", "n_way": 6}, "meta": {"methods": ["maml"]}}, "[task] n_way = 6: larger than the 5 classes"),
    ({"task": {"name": "fewshot", "n_way": 21, "augment": "rotate"}, "meta": {"methods": ["maml"]}}, "[task] n_way = 21: larger than the 20"),
    ({"inner": {"steps": 0}}, "[inner] steps = 0: maml needs an integer >= 1"),
    ({"inner": {"steps": 0}, "meta": {"methods": ["fomaml", "pretrained"]}}, "[inner] steps = 0: fomaml needs"),
    ({"overrides": {"reptile": {"inner_steps": 0}}}, "[overrides.reptile] inner_steps = 0"),
    ({"inner": {"optimizer": "lbfgs"}}, "[inner] optimizer = 'lbfgs': is not an elementwise"),
    ({"inner": {"optimizer": "adam", "learn_lr": True}}, "[inner] learn_lr = True"),
    ({"task": {"name": "fewshot", "train_classes": [0, 1, 2, 3, 4], "test_classes": [4, 5, 6, 7, 8]},
      "meta": {"methods": ["maml"]}}, "[task] test_classes = [4, 5, 6, 7, 8]: shares classes [4]"),
])
def test_bad_configs_name_the_field(change: dict, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg = parse_meta_config(change)
        tasks = build_tasks(cfg)
        for m in cfg.meta.methods:
            make_learner(cfg, m, tasks)
    assert where in str(err.value)


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[inner]\nsteps = 0\n[meta]\nmethods = ["maml"]\n')
    res = CliRunner().invoke(app, ["meta", str(bad), "--out-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "[inner] steps = 0" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()  # nothing was written
    res = CliRunner().invoke(app, ["meta", "--print-config"])
    assert res.exit_code == 0 and load_meta_config().meta.methods == ["maml", "fomaml", "reptile", "pretrained", "oracle"]
    assert "[overrides.reptile]" in res.output


def test_a_config_file_that_cannot_be_read_is_one_error_naming_it(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('name = "m"\n# caf\xe9\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml'?: not UTF-8 text \(byte 0xe9 on line 2\)"):
        load_meta_config(latin)
    with pytest.raises(ConfigError, match="no such file"):
        load_meta_config(tmp_path / "missing.toml")
    latin.write_text("[meta\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_meta_config(latin)
    latin.write_text("meta = 3\n")  # an override into a value that is not a table
    with pytest.raises(ConfigError, match=r"meta = 3: is not a table, so meta\.iterations cannot be set"):
        load_meta_config(latin, {"meta.iterations": 5})
    res = CliRunner().invoke(app, ["meta", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "no such file" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].glob("examples/meta_*.toml")),
                         ids=lambda p: p.name)
def test_every_meta_example_config_is_valid(path: Path) -> None:
    cfg = load_meta_config(path)
    assert cfg.name == path.stem.replace("_", "-")
    tasks = build_tasks(cfg)
    for m in cfg.meta.methods:
        make_learner(cfg, m, tasks)
