"""One validator, driven by the schema: bad values generated from every registry entry and
every chain transform (torch's `optim_error_inputs_func` table is the model) are refused with
an error naming the argument and the value; constructors read the schema, so the two cannot
drift apart; the config wraps the same check."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from optim_cases import make_params

import thalweg.optim as to
from thalweg.optim import registry, transforms
from thalweg.optim.registry import Hyperparameter, HyperparameterError, HyperparameterTypeError


def bad_values(spec: Hyperparameter) -> Iterator[tuple[Any, type[Exception]]]:
    """Values outside `spec`, each with the error class it must raise."""
    if spec.kind == "bool":
        yield from (("yes", HyperparameterTypeError), (1, HyperparameterTypeError), (None, HyperparameterError))
        return
    if spec.kind == "choice":
        yield from (("no-such-choice", HyperparameterError), (3, HyperparameterError))
        return
    if spec.kind == "betas":
        yield from (((1.0, 0.999), HyperparameterError), ((0.9, -0.1), HyperparameterError),
                    ((math.nan, 0.999), HyperparameterError), ((0.9, math.inf), HyperparameterError),
                    ((0.9,), HyperparameterError), ("0.9,0.999", HyperparameterError),
                    ((0.9, "0.999"), HyperparameterTypeError))
        return
    if spec.low is not None:
        yield (spec.low - 1 if spec.kind == "int" else spec.low - 0.5), HyperparameterError
        if not spec.low_inclusive:
            yield spec.low, HyperparameterError
    if spec.high is not None:
        yield (spec.high + 0.5 if spec.high_inclusive else spec.high), HyperparameterError
    yield math.nan, HyperparameterError
    if not spec.allow_inf:
        yield math.inf, HyperparameterError
        yield -math.inf, HyperparameterError
    yield "1e-3", HyperparameterTypeError  # a numeric string: "write a number"
    yield [0.1], HyperparameterTypeError
    yield True, HyperparameterTypeError  # a bool is not a number
    if spec.kind == "int":
        yield 2.5, HyperparameterTypeError
    if not spec.schedulable:
        yield (lambda t: 0.1), HyperparameterTypeError


def _names_value(msg: str, name: str, bad: Any) -> bool:
    shown = [repr(bad)] + ([repr(x) for x in bad] if isinstance(bad, tuple) else [])
    return (name in msg and any(s in msg for s in shown)) or (callable(bad) and name in msg)


def _target(info: registry.OptimizerInfo) -> Any:
    return torch.nn.Linear(3, 2) if info.needs_model else make_params()


OPTIMIZER_CASES = [
    pytest.param(info, spec, id=f"{info.name}-{spec.name}")
    for info in registry.infos()
    for spec in info.hyperparameters
]


@pytest.mark.parametrize(("info", "spec"), OPTIMIZER_CASES)
def test_every_bad_value_of_every_optimizer_is_refused_naming_it(info, spec):
    for bad, exc in bad_values(spec):
        for build in (lambda: registry.create(info.name, _target(info), **{spec.name: bad}),  # noqa: B023
                      lambda: info.factory(_target(info), **{spec.name: bad})):  # noqa: B023  the constructor itself
            with pytest.raises(exc) as err:
                build()
            assert _names_value(str(err.value), spec.name, bad), (bad, str(err.value))
            if exc is HyperparameterTypeError:
                assert isinstance(err.value, TypeError) and isinstance(err.value, ValueError)


def test_a_numeric_string_is_told_to_be_written_as_a_number():
    with pytest.raises(ValueError, match=r"lr must be a number, got '1e-3' \(a string: write 1e-3 without quotes\)"):
        to.Adam(make_params(), lr="1e-3")
    with pytest.raises(ValueError, match=r"lr must be a number, got 'fast'$"):
        to.Adam(make_params(), lr="fast")


def test_inf_is_refused_unless_the_schema_allows_it():
    spec = Hyperparameter("max_norm", 1.0, low=0.0, low_inclusive=False, allow_inf=True)
    assert spec.check(math.inf) == math.inf
    with pytest.raises(HyperparameterError, match="must be finite"):
        spec.check(math.nan)
    assert to.clip_by_global_norm(math.inf).max_norm == math.inf  # "no clipping" is a choice


@pytest.mark.parametrize("info", registry.infos(), ids=lambda i: i.name)
def test_constructor_arguments_are_the_schema(info):
    """Every constructor argument is a schema entry (same default) or a declared option, so
    no argument escapes the validator and the config/CLI see every knob."""
    sig = inspect.signature(info.factory.__init__).parameters
    args = {k for k in sig if k not in ("self", "params", "model")}
    schema = {h.name for h in info.hyperparameters}
    assert args - set(info.options) == schema
    for h in info.hyperparameters:
        assert sig[h.name].default == h.default, h.name


def test_second_order_constructors_read_the_registry_schema(monkeypatch):
    """Tightening a bound in the registry tightens the constructor: nothing to keep in step."""
    info = registry.get("newton")
    tighter = tuple(Hyperparameter("damping", 0.0, low=0.0, high=0.5) if h.name == "damping" else h
                    for h in info.hyperparameters)
    monkeypatch.setitem(registry._REGISTRY, "newton", registry.OptimizerInfo(
        **{**info.__dict__, "hyperparameters": tighter}))
    with pytest.raises(ValueError, match=r"damping must be ≤ 0.5, got 0.7"):
        to.Newton([torch.zeros(2, requires_grad=True)], damping=0.7)


def test_config_wraps_the_same_check_and_names_section_field_value():
    import tomllib

    from thalweg.train.config import DEFAULT_TOML, ConfigError, parse_config

    base = tomllib.loads(DEFAULT_TOML)
    checked = 0
    for info in registry.infos():
        for spec in info.hyperparameters:
            for bad, _ in bad_values(spec):
                if callable(bad) or bad is None or (isinstance(bad, tuple) and len(bad) != 2):
                    continue  # TOML cannot write these
                data = {**base, "optimizer": {"name": info.name, spec.name: bad}}
                with pytest.raises(ConfigError) as err:
                    parse_config(data)
                e = err.value
                assert (e.section, e.field, e.value) == ("optimizer", spec.name, bad), str(e)
                try:
                    spec.check(bad)
                except HyperparameterError as ref:  # the same words as the registry's check
                    assert ref.problem.replace("≥", ">=").replace("≤", "<=") in str(e)
                checked += 1
    assert checked > 100


def test_validate_hparams_checks_values_too():
    with pytest.raises(ValueError, match=r"momentum must be < 1.0, got 1.0"):
        registry.validate_hparams("sgd", {"momentum": 1.0})
    registry.validate_hparams("sgd", {"momentum": 0.5, "compile": False})


# ------------------------------------------------------------------ chain transforms
TRANSFORMS = [getattr(transforms, n) for n in transforms.__all__
              if isinstance(getattr(transforms, n), type) and issubclass(getattr(transforms, n), to.Transform)
              and getattr(transforms, n).schema]
TRANSFORM_CASES = [pytest.param(cls, spec, id=f"{cls.name}-{spec.name}") for cls in TRANSFORMS for spec in cls.schema]


@pytest.mark.parametrize(("cls", "spec"), TRANSFORM_CASES)
def test_every_bad_argument_of_every_transform_is_refused_naming_it(cls, spec):
    factory = getattr(transforms, cls.name)
    ok = {h.name: h.default for h in cls.schema}
    factory(**ok)  # the schema defaults are valid arguments
    for bad, exc in bad_values(spec):
        if bad is None and spec.default is None:
            continue
        with pytest.raises(exc) as err:
            factory(**{**ok, spec.name: bad})
        msg = str(err.value)
        assert msg.startswith(f"{cls.name}: {spec.name}") and _names_value(msg, spec.name, bad), msg


@pytest.mark.parametrize(("make", "match"), [
    (lambda: to.scale_by_lr(math.nan), r"scale_by_lr: lr must be finite, got nan"),
    (lambda: to.add_decayed_weights(math.nan), r"add_decayed_weights: weight_decay must be finite, got nan"),
    (lambda: to.clip_by_global_norm(-1), r"clip_by_global_norm: max_norm must be > 0.0, got -1"),
    (lambda: to.scale_by_adam(b1=1.5), r"scale_by_adam: b1 must be < 1.0, got 1.5"),
])
def test_the_issue_examples(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_group_references_and_schedules_pass_the_transform_check():
    to.scale_by_adam(to.Hyper("betas", 0), to.Hyper("betas", 1), to.Hyper("eps"))
    to.scale_by_lr(lambda t: 0.1 * 0.9**t)
    with pytest.raises(HyperparameterTypeError, match="amsgrad must be true or false"):
        to.scale_by_adam(amsgrad=to.Hyper("amsgrad"))  # structural: changes the kernel
