"""Each diagnosis rule fires on a constructed case and stays quiet on a healthy one."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thalweg.curvature import classify
from thalweg.diagnose import (
    Finding,
    Thresholds,
    diagnose,
    format_findings,
    to_html,
    to_json,
    write_html_section,
)
from thalweg.monitors import Monitor


def _codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


def _measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float | None = None) -> dict:
    with Monitor(model) as mon:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if lr is not None:
            mon.snapshot()
            torch.optim.SGD(model.parameters(), lr=lr).step()
        return mon.measure(loss=loss)


def _deep(act: type[nn.Module], std: float | None, depth: int = 8, width: int = 16) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    n_in = 10
    for _ in range(depth):
        lin = nn.Linear(n_in, width)
        if std is None:
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        else:
            nn.init.normal_(lin.weight, std=std)
        nn.init.zeros_(lin.bias)
        layers += [lin, act()]
        n_in = width
    layers.append(nn.Linear(n_in, 3))
    return nn.Sequential(*layers)


X, Y = torch.randn(64, 10, generator=torch.Generator().manual_seed(1)), torch.arange(64) % 3


def test_healthy_relu_net_has_no_findings() -> None:
    m = _measure(_deep(nn.ReLU, None), X, Y, lr=1e-2)
    found = diagnose(m)
    assert found == [], format_findings(found)
    assert format_findings(found).startswith("No findings")


def test_vanishing_gradients_in_a_deep_sigmoid_net_with_tiny_init() -> None:
    m = _measure(_deep(nn.Sigmoid, 0.01), X, Y)
    found = diagnose(m)
    assert "VANISHING_GRADIENTS" in _codes(found)
    f = next(f for f in found if f.code == "VANISHING_GRADIENTS")
    assert f.evidence["ratio_first_to_last"] < 1e-3 and f.evidence["first_layer"] == "0"
    assert "SATURATED_ACTIVATIONS" not in _codes(found)  # tiny weights: sigmoid sits at 0.5


def test_exploding_gradients_with_a_large_init() -> None:
    found = diagnose(_measure(_deep(nn.ReLU, 1.5), X, Y))
    assert "EXPLODING_GRADIENTS" in _codes(found)


def test_dead_units_and_saturation() -> None:
    relu = _deep(nn.ReLU, None, depth=2)
    with torch.no_grad():
        relu[0].bias.fill_(-1e3)  # the first layer never fires
    found = diagnose(_measure(relu, X, Y))
    dead = [f for f in found if f.code == "DEAD_UNITS"]
    assert dead and dead[0].severity == "critical" and dead[0].evidence["dead_fraction"] == 1.0
    tanh = _deep(nn.Tanh, 1.0, depth=2)
    found = diagnose(_measure(tanh, X * 100, Y))
    assert "SATURATED_ACTIVATIONS" in _codes(found)


def test_overflow_is_critical_and_first() -> None:
    x = X.clone()
    x[0, 0] = float("inf")
    found = diagnose(_measure(_deep(nn.ReLU, None, depth=2), x, Y))
    assert found[0].code == "NONFINITE" and found[0].severity == "critical"
    assert "NONFINITE" in _codes(diagnose({"loss_history": [1.0, 0.5, float("nan")]}))


def test_update_ratio_rules() -> None:
    assert "UPDATE_TOO_LARGE" in _codes(diagnose(_measure(_deep(nn.ReLU, None, depth=2), X, Y, lr=50.0)))
    assert not _codes(diagnose(_measure(_deep(nn.ReLU, None, depth=2), X, Y, lr=1e-2)))
    assert "UPDATE_TOO_SMALL" in _codes(diagnose(_measure(_deep(nn.ReLU, None, depth=2), X, Y, lr=1e-9)))


def _gd_diverges(lr: float, curv: tuple[float, float], momentum: float = 0.0) -> bool:
    x = torch.tensor([1.0, 1.0], dtype=torch.float64)
    v = torch.zeros(2, dtype=torch.float64)
    h = torch.tensor(curv, dtype=torch.float64)
    for _ in range(200):
        v = momentum * v + h * x
        x = x - lr * v
    return bool(x.abs().max() > 1.0)


@pytest.mark.parametrize(("lr", "momentum", "code"), [
    (0.6, 0.0, "LR_BEYOND_STABILITY"), (0.4, 0.0, "LR_NEAR_EDGE"), (0.1, 0.0, None), (0.6, 0.9, "LR_NEAR_EDGE"),
])
def test_learning_rate_against_the_stability_edge(lr: float, momentum: float, code: str | None) -> None:
    ravine = lambda p: 0.1 * p[0] ** 2 + 2 * p[1] ** 2  # noqa: E731  (λ = 0.2, 4)
    c = classify(ravine, [0.0, 0.0])
    found = diagnose({"curvature": c, "lr": lr, "optimizer": "sgd", "momentum": momentum})
    lr_codes = {f.code for f in found if f.code.startswith("LR_")}
    assert lr_codes == ({code} if code else set())
    # the rule agrees with what heavy-ball GD actually does on this quadratic
    assert _gd_diverges(lr, (0.2, 4.0), momentum) == (code == "LR_BEYOND_STABILITY")
    if code == "LR_BEYOND_STABILITY":
        f = next(f for f in found if f.code == code)
        assert f.severity == "critical" and f.evidence["lr_x_lambda_max"] == pytest.approx(2.4)
        adam = diagnose({"curvature": c, "lr": lr, "optimizer": "adam"})
        assert next(f for f in adam if f.code == code).severity == "warning"


def test_saddle_minimum_and_ill_conditioning_from_classification() -> None:
    saddle = diagnose({"curvature": classify(lambda p: p[0] ** 2 - p[1] ** 2, [0.0, 0.0])})
    assert _codes(saddle) == {"SADDLE"} and saddle[0].evidence["lambda_min"] == pytest.approx(-2.0)
    bowl = diagnose({"curvature": classify(lambda p: p[0] ** 2 + p[1] ** 2, [0.0, 0.0])})
    assert _codes(bowl) == {"AT_MINIMUM"}
    flat = diagnose({"curvature": classify(lambda p: p[0] ** 3, [0.0])})
    assert _codes(flat) == {"FLAT_REGION"}
    ravine = diagnose({"curvature": classify(lambda p: 1e-3 * p[0] ** 2 + 2 * p[1] ** 2, [0.0, 0.0])})
    assert _codes(ravine) == {"AT_MINIMUM", "ILL_CONDITIONED"}
    ill = next(f for f in ravine if f.code == "ILL_CONDITIONED")
    assert ill.evidence["condition_number"] == pytest.approx(2000.0)
    assert "ILL_CONDITIONED" not in _codes(diagnose({"curvature": {"condition_number": 10.0}}))
    assert "ILL_CONDITIONED" in _codes(diagnose({"curvature": {"condition_number": 10.0}}, Thresholds(ill_conditioned=5)))


def test_text_json_and_html_outputs(tmp_path) -> None:
    found = diagnose({"curvature": classify(lambda p: p[0] ** 2 - p[1] ** 2, [0.0, 0.0]), "lr": 2.0,
                      "loss": float("nan")})
    text = format_findings(found)
    assert "[CRITICAL] NONFINITE" in text and "SADDLE" in text and "action:" in text
    data = json.loads(to_json(found))
    assert [d["code"] for d in data] == [f.code for f in found] and data[0]["evidence"]["loss"] is True
    page = tmp_path / "report.html"
    page.write_text("<html><body><h1>run</h1></body></html>")
    write_html_section(page, to_html(found))
    html = page.read_text()
    assert html.index("<h1>run</h1>") < html.index("SADDLE") < html.index("</body>")
    fresh = write_html_section(tmp_path / "new" / "report.html", to_html([]))
    assert "No findings" in fresh.read_text()
    with pytest.raises(TypeError, match="measurements"):
        diagnose([1, 2])  # type: ignore[arg-type]


def test_the_doctors_page_shows_each_figure_once_and_symptoms_under_their_cause(tmp_path) -> None:
    from thalweg.diagnose import Finding, rank, to_html

    cause = Finding("LR_TOO_HIGH", "rate", "warning", {"lr": 1.5}, "lower it", confidence=0.9, figure="loss")
    symptom = Finding("DEAD_UNITS", "<dead> & gone", "critical", {"dead_fraction": 0.9}, "a", confidence=0.97)
    other = Finding("FROZEN_PARAMETERS", "frozen", "warning", {}, "b", confidence=0.8, figure="loss")
    ranked = rank([symptom, cause, other])
    assert [f.code for f in ranked] == ["LR_TOO_HIGH", "FROZEN_PARAMETERS"]
    loss = tmp_path / "figures" / "doctor_loss.png"
    page = str(to_html(ranked, figures={0: loss, 1: loss}, base=tmp_path))
    assert page.count('src="figures/doctor_loss.png"') == 1  # not once per finding that points at it
    assert "symptoms it explains" in page and "DEAD_UNITS" in page and "&lt;dead&gt; &amp; gone" in page
