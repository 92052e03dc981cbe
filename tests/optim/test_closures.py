"""One closure serves every closure-driven optimizer in the registry: the usual torch closure
that calls `loss.backward()` and one that only returns the loss take the same steps."""

from __future__ import annotations

import pytest
import torch

from thalweg.optim import registry

CLOSURE_OPTIMIZERS = [i for i in registry.infos() if i.needs_closure]


def test_the_registry_has_closure_optimizers():
    assert {"newton", "lbfgs", "adahessian"} <= {i.name for i in CLOSURE_OPTIMIZERS}


@pytest.mark.parametrize("info", CLOSURE_OPTIMIZERS, ids=lambda i: i.name)
def test_a_torch_style_closure_that_calls_backward_gives_the_same_step(info) -> None:
    out = []
    for style in ("returns", "backward"):
        x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
        opt = registry.create(info.name, [x], lr=0.5)

        def closure(x=x, opt=opt, style=style) -> torch.Tensor:
            opt.zero_grad()
            loss = (x**4).sum() + x[0] * x[1]
            if style == "backward":
                loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        out.append((x.detach().clone(), x.grad.clone()))
    assert not torch.equal(out[0][0], torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


@pytest.mark.parametrize("name", ["newton", "adahessian"])
def test_closure_is_required_and_must_not_call_autograd_backward(name) -> None:
    """Newton and AdaHessian differentiate the returned loss themselves (with its graph), so a
    closure that already spent the graph through torch.autograd.backward is a clear error."""
    x = torch.ones(2, requires_grad=True)
    opt = registry.create(name, [x])
    with pytest.raises(ValueError, match="closure"):
        opt.step()

    def autograd_backward() -> torch.Tensor:
        loss = (x**2).sum()
        torch.autograd.backward(loss)
        return loss

    with pytest.raises(RuntimeError, match=r"torch\.autograd\.backward"):
        opt.step(autograd_backward)
