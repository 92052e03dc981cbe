"""Loss-landscape slices: filter normalization, what is left out, exact restore, NPZ, figures."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from torch import nn

from thalweg.landscape import slices as S
from thalweg.models import CNN1d


def _net(norm: str = "batch") -> nn.Module:
    torch.manual_seed(0)
    return CNN1d(16, 3, channels=4, depth=2, norm=norm)


def _data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 16, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_filter_normalized_direction_has_the_weights_filter_norms() -> None:
    net = _net()
    d = S.random_direction(net, norm="filter", generator=torch.Generator().manual_seed(0))
    checked = 0
    for (name, p), di in zip(net.named_parameters(), d, strict=True):
        if p.dim() >= 2:  # conv filters [out, in, k] and linear rows [out, in]
            wn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            dn = di.reshape(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(dn, wn, rtol=1e-5, atol=1e-7)
            assert not torch.allclose(di, p.detach())  # a random direction, not the weights
            checked += 1
        else:  # biases and BatchNorm parameters are left out by default
            assert torch.count_nonzero(di) == 0, name
    assert checked >= 3


def test_layer_none_and_including_biases() -> None:
    net = _net()
    gen = torch.Generator().manual_seed(0)
    d = S.random_direction(net, norm="layer", ignore_bias_and_norm=False, generator=gen)
    for p, di in zip(net.parameters(), d, strict=True):
        torch.testing.assert_close(di.norm(), p.detach().norm(), rtol=1e-5, atol=1e-7)
    raw = S.random_direction(net, norm="none", generator=torch.Generator().manual_seed(0))
    assert any(torch.count_nonzero(r) > 0 for r in raw)
    with pytest.raises(ValueError, match="norm must be one of"):
        S.random_direction(net, norm="rows")  # type: ignore[arg-type]


def test_slice_restores_the_model_and_centre_is_the_model_loss() -> None:
    net = _net()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = _data()
    loss_fn = nn.functional.cross_entropy
    s = S.slice_1d(net, loss_fn, (x, y), span=0.5, resolution=5)
    assert net.training  # mode restored
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    net.eval()
    with torch.no_grad():
        expected = float(loss_fn(net(x), y))
    assert s.center_loss == pytest.approx(expected, rel=1e-6)
    assert s.loss.shape == (5,) and s.accuracy is not None
    assert s.batchnorm and "eval mode" in s.describe() and "running" in s.describe()
    # train mode uses batch statistics: a different loss at the centre, still restored after
    s_train = S.slice_1d(net, loss_fn, (x, y), span=0.5, resolution=5, mode="train")
    assert s_train.center_loss != pytest.approx(expected, rel=1e-6)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_slice_along_a_given_direction_is_the_loss_there() -> None:
    torch.manual_seed(0)
    net = nn.Linear(4, 1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    d = [torch.ones_like(p) for p in net.parameters()]
    s = S.slice_1d(net, nn.functional.mse_loss, (x, y), direction=d, span=1.0, resolution=3)
    with torch.no_grad():
        shifted = nn.functional.mse_loss(x @ (net.weight + 1).T + net.bias + 1, y)
    assert s.loss[-1] == pytest.approx(float(shifted), rel=1e-6)
    assert s.accuracy is None


def test_slice_2d_npz_and_figures(tmp_path) -> None:
    net = _net()
    x, y = _data()
    s = S.slice_2d(net, nn.functional.cross_entropy, (x, y), span=0.4, resolution=5, seed=3)
    assert s.loss.shape == (5, 5)
    path = s.save(tmp_path / "slice.npz")
    back = S.LandscapeSlice.load(path)
    np.testing.assert_array_equal(back.loss, s.loss)
    assert back.norm == "filter" and back.mode == "eval" and back.batchnorm
    assert back.center_loss == pytest.approx(s.center_loss)
    fig = S.figure_slice(s)
    assert "eval mode" in " ".join(t.get_text() for t in fig.texts)
    fig.savefig(tmp_path / "s2.png", dpi=40)
    S.figure_slice(S.slice_1d(net, nn.functional.cross_entropy, (x, y), resolution=3)).savefig(
        tmp_path / "s1.png", dpi=40)
    assert mpimg.imread(tmp_path / "s2.png").ndim == 3 and (tmp_path / "s1.png").stat().st_size


def test_bad_arguments_are_named() -> None:
    net = _net()
    x, y = _data()
    with pytest.raises(ValueError, match="span"):
        S.slice_1d(net, nn.functional.cross_entropy, (x, y), span=0)
    with pytest.raises(ValueError, match="resolution"):
        S.slice_2d(net, nn.functional.cross_entropy, (x, y), resolution=2)
    with pytest.raises(ValueError, match="mode"):
        S.slice_1d(net, nn.functional.cross_entropy, (x, y), mode="test")
    with pytest.raises(ValueError, match="len"):
        S.slice_1d(net, nn.functional.cross_entropy, (x, y[:3]))
    s = S.slice_1d(net, nn.functional.cross_entropy, (x, y), resolution=3)
    with pytest.raises(ValueError, match="one label per slice"):
        S.figure_compare([s, s], ["only one"])
