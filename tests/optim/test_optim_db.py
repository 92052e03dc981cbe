"""torch's own optimizer table drives these tests: `optim_db` (torch.testing._internal
.common_optimizers, shipped in the torch wheel) lists, per torch.optim class, the configurations
torch tests (`optim_inputs`, with the global foreach/fused switches) and the inputs torch refuses
(`optim_error_inputs`). For every class thalweg twins (the registry's `torch_reference`):

- every configuration runs the presence scenario (optim_cases.presence_run: a layer frozen and
  unfrozen, a detached bias, a step without backward, a never-reached head, a tensor frozen at
  construction, an added param group) under both `zero_grad` modes, and thalweg's parameters are
  torch's for-loop ones bitwise at every step (compiled: to rounding, one configuration each);
- every error input is refused with torch's exception type (a warning: the same warning), and
  the message matches torch's or names the argument and its value.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from optim_cases import presence_run

from thalweg.optim import registry

pytest.importorskip("expecttest")  # torch's test utilities need it (the dev extra)
from torch.testing._internal.common_optimizers import (
    OptimizerErrorEnum,
    _get_optim_inputs_including_global_cliquey_kwargs,
    optim_db,
)

TWINS = {i.torch_reference.__name__: i for i in registry.infos() if i.torch_reference is not None and i.order == "first"}
DB = [o for o in optim_db if o.optim_cls.__name__ in TWINS]


def _configs(oinfo):
    # differentiable=True runs torch's own implementation (rules/torch_twin.py) and needs
    # non-leaf parameters, as torch's does: its own tests cover it
    return _get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float32, oinfo, skip=("differentiable",))


CONFIGS = [pytest.param(o, c.kwargs, id=f"{o.optim_cls.__name__}-{c.desc}-" + "-".join(
    f"{k}={v}" for k, v in c.kwargs.items() if k in ("foreach", "fused")))
    for o in DB for c in _configs(o)]


def test_the_table_covers_every_twin():
    assert set(TWINS) <= {o.optim_cls.__name__ for o in optim_db}
    assert len(CONFIGS) > 50


def _forloop(kwargs):
    """torch's reference implementation: the for-loop (foreach/fused off)."""
    return {**{k: v for k, v in kwargs.items() if k not in ("foreach", "fused")},
            **({"foreach": False} if "foreach" in kwargs or "fused" in kwargs else {})}


@pytest.mark.parametrize("set_to_none", [None, False], ids=["default", "set_to_none=False"])
@pytest.mark.parametrize(("oinfo", "kwargs"), CONFIGS)
def test_every_configuration_matches_torch_when_parameters_lack_gradients(oinfo, kwargs, set_to_none):
    info = TWINS[oinfo.optim_cls.__name__]
    extra = {"compile": False} if "compile" in info.options else {}
    ours, _ = presence_run(lambda g: info.factory(g, **kwargs, **extra), set_to_none)
    theirs, _ = presence_run(lambda g: oinfo.optim_cls(g, **_forloop(kwargs)), set_to_none)
    for k, (sa, sb) in enumerate(zip(ours, theirs, strict=True)):
        for j, (x, y) in enumerate(zip(sa, sb, strict=True)):
            assert torch.equal(x, y), f"step {k}, tensor {j}: {(x - y).abs().max().item()}"


@pytest.mark.slow
@pytest.mark.xdist_group("inductor")
@pytest.mark.parametrize("oinfo", [o for o in DB if "compile" in TWINS[o.optim_cls.__name__].options],
                         ids=lambda o: o.optim_cls.__name__)
def test_compiled_matches_torch_when_parameters_lack_gradients(oinfo):
    """The richest configuration (most options set) through the compiled kernels."""
    info = TWINS[oinfo.optim_cls.__name__]
    kwargs = max((c.kwargs for c in oinfo.optim_inputs_func(device="cpu")
                  if not any(isinstance(v, torch.Tensor) for v in c.kwargs.values())), key=len)
    ours, opt = presence_run(lambda g: info.factory(g, **kwargs, compile=True), None)
    theirs, _ = presence_run(lambda g: oinfo.optim_cls(g, foreach=False, **kwargs), None)
    assert any(seg.compiled for seg in opt._segments)
    for sa, sb in zip(ours, theirs, strict=True):
        for x, y in zip(sa, sb, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


ERRORS = [pytest.param(o, e, id=f"{o.optim_cls.__name__}-{e.optimizer_error_input.desc}")
          for o in DB for e in o.optim_error_inputs_func(device="cpu", dtype=torch.float32)]


def _names_argument(msg: str, kwargs: dict) -> bool:
    return any(k in msg and (repr(v) in msg or str(v) in msg) for k, v in kwargs.items())


@pytest.mark.parametrize(("oinfo", "error"), ERRORS)
def test_every_input_torch_refuses_is_refused_alike(oinfo, error):
    cls = TWINS[oinfo.optim_cls.__name__].factory
    inp = error.optimizer_error_input
    if issubclass(error.error_type, Warning):
        with pytest.warns(error.error_type, match=error.error_regex):
            cls(inp.params, **inp.kwargs)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as caught:
            if error.error_on == OptimizerErrorEnum.CONSTRUCTION_ERROR:
                cls(inp.params, **inp.kwargs)
            else:
                cls(inp.params, **inp.kwargs).step()
    assert isinstance(caught.value, error.error_type), f"{type(caught.value).__name__}: {caught.value}"
    msg = str(caught.value)
    assert re.search(error.error_regex, msg) or _names_argument(msg, inp.kwargs), msg
