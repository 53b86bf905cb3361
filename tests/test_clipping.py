"""Clipping changes the gradient as its mode says, and reports the pre-clip norm honestly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.clipping import Clipper, ClippingError


def model_with_gradient(scale: float) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    loss = (model(torch.randn(16, 4)) * scale).pow(2).sum()
    loss.backward()
    return model


def global_norm(model: nn.Module) -> float:
    flat = torch.cat([p.grad.flatten() for p in model.parameters()])
    return float(torch.linalg.vector_norm(flat))


def test_norm_clipping_rescales_to_threshold_and_reports_pre_clip_norm() -> None:
    model = model_with_gradient(100.0)
    before = global_norm(model)
    pre, post, fired, failed = Clipper("norm", 1.0)(model.parameters())
    assert not bool(failed)
    assert float(pre) == pytest.approx(before, rel=1e-6)
    assert bool(fired) and before > 1.0
    assert global_norm(model) == pytest.approx(1.0, rel=1e-5) == float(post)


def test_norm_clipping_below_threshold_changes_nothing() -> None:
    model = model_with_gradient(1e-3)
    grads = [p.grad.clone() for p in model.parameters()]
    pre, post, fired, failed = Clipper("norm", 1e6)(model.parameters())
    assert not bool(failed)
    assert not bool(fired) and float(pre) < 1e6 and float(post) == pytest.approx(float(pre))
    for p, g in zip(model.parameters(), grads, strict=True):
        assert torch.equal(p.grad, g)


def test_value_clipping_clamps_every_element() -> None:
    model = model_with_gradient(10.0)
    largest = max(float(p.grad.abs().max()) for p in model.parameters())
    assert largest > 0.5
    pre, post, fired, failed = Clipper("value", 0.5)(model.parameters())
    assert not bool(failed)
    assert bool(fired)
    assert max(float(p.grad.abs().max()) for p in model.parameters()) <= 0.5
    assert float(pre) > global_norm(model) == pytest.approx(float(post))


def test_none_measures_without_changing() -> None:
    model = model_with_gradient(100.0)
    before = global_norm(model)
    pre, post, fired, failed = Clipper("none", 1.0)(model.parameters())
    assert not bool(failed)
    assert float(pre) == pytest.approx(before, rel=1e-6) == float(post) and not bool(fired)
    assert global_norm(model) == pytest.approx(before, rel=1e-6)


def test_clipping_before_backward_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="after loss.backward"):
        Clipper("norm", 1.0)(nn.Linear(2, 2).parameters())


@pytest.mark.parametrize(("mode", "threshold"), [("elementwise", 1.0), ("norm", 0.0)])
def test_bad_clipping_arguments(mode: str, threshold: float) -> None:
    with pytest.raises(ValueError, match="clip\\."):
        Clipper(mode, threshold)


@pytest.mark.parametrize("mode", ["norm", "value"])
def test_clipping_that_does_nothing_fails_loudly(monkeypatch: pytest.MonkeyPatch,
                                                 mode: str) -> None:
    """The audit catches the peer-code failure: a clip call that leaves the gradient as is."""
    monkeypatch.setattr(nn.utils, "clip_grad_norm_",
                        lambda params, max_norm: nn.utils.get_total_norm(
                            [p.grad for p in params]))
    monkeypatch.setattr(nn.utils, "clip_grad_value_", lambda params, clip_value: None)
    model = model_with_gradient(100.0)
    audit = Clipper(mode, 0.1)(model.parameters())
    assert bool(audit.failed)
    with pytest.raises(ClippingError, match="clipping failed: after clipping, the gradient "
                                            "still exceeds the threshold"):
        audit.check()
