"""Clipping changes the gradient as its mode says, and reports the pre-clip norm honestly."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.host_reads import HostReads
from torch import nn

from harness.clipping import GUARD_SHRINK, Clipper, ClippingError, guard, untrusted
from harness.schema import ClipConfig, ClipMode


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
    pre, post, fired, failed, guarded = Clipper("norm", 1.0)(model.parameters())
    assert not bool(failed) and not bool(guarded)
    assert float(pre) == pytest.approx(before, rel=1e-6)
    assert bool(fired) and before > 1.0
    assert global_norm(model) == pytest.approx(1.0, rel=1e-5) == float(post)


def test_norm_clipping_below_threshold_changes_nothing() -> None:
    model = model_with_gradient(1e-3)
    grads = [p.grad.clone() for p in model.parameters()]
    pre, post, fired, failed, guarded = Clipper("norm", 1e6)(model.parameters())
    assert not bool(failed) and not bool(guarded)
    assert not bool(fired) and float(pre) < 1e6 and float(post) == pytest.approx(float(pre))
    for p, g in zip(model.parameters(), grads, strict=True):
        assert torch.equal(p.grad, g)


def test_value_clipping_clamps_every_element() -> None:
    model = model_with_gradient(10.0)
    largest = max(float(p.grad.abs().max()) for p in model.parameters())
    assert largest > 0.5
    pre, post, fired, failed, guarded = Clipper("value", 0.5)(model.parameters())
    assert not bool(failed) and not bool(guarded)
    assert bool(fired)
    assert max(float(p.grad.abs().max()) for p in model.parameters()) <= 0.5
    assert float(pre) > global_norm(model) == pytest.approx(float(post))


def test_none_measures_without_changing() -> None:
    model = model_with_gradient(100.0)
    before = global_norm(model)
    pre, post, fired, failed, guarded = Clipper("none", 1.0)(model.parameters())
    assert not bool(failed) and not bool(guarded)
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


def test_backprop_mode_leaves_the_parameter_gradients_alone() -> None:
    """`backprop` clamps inside the cells' backprop: here it only measures, even a gradient
    whose elements are far above the threshold."""
    model = model_with_gradient(100.0)
    grads = [p.grad.clone() for p in model.parameters()]
    assert max(float(g.abs().max()) for g in grads) > 1.0
    pre, post, fired, failed, guarded = Clipper("backprop", 1.0)(model.parameters())
    assert torch.equal(pre, post)
    assert float(pre) == pytest.approx(global_norm(model), rel=1e-6)
    assert not bool(fired) and not bool(failed) and not bool(guarded)
    for p, g in zip(model.parameters(), grads, strict=True):
        assert torch.equal(p.grad, g)


def recurrent_net(bad: float | None) -> tuple[nn.Parameter, list[nn.Parameter]]:
    """W (the recurrent matrix), U and b with gradients: random and small, or with the bias
    gradient's first element set to `bad` (NaN, inf, or huge)."""
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 4)), nn.Parameter(torch.randn(4, 3)),
              nn.Parameter(torch.randn(4))]
    for p in params:
        p.grad = torch.randn_like(p) * 0.1
    if bad is not None:
        params[2].grad[0] = bad
    return params[0], params


@pytest.mark.parametrize("mode", ["none", "norm", "value", "backprop"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e11])
def test_the_nan_guard_replaces_an_untrustworthy_gradient(mode: str, bad: float) -> None:
    """Pascanu et al. 2013: a gradient norm that is NaN, inf or above 1e10 makes the recurrent
    matrix's gradient 0.02 W and every other gradient 0, whatever the clipping mode; the audit
    says so, reports the norm as it was, and the guarded step is no clipping failure (the
    threshold is far below |0.02 W|)."""
    w, params = recurrent_net(bad)
    audit = Clipper(mode, 1e-6, nan_guard=True)(params, recurrent=[w])
    assert torch.equal(w.grad, GUARD_SHRINK * w.detach())
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in params[1:])
    assert bool(audit.guarded) and not bool(audit.failed)
    assert not float(audit.pre) <= 1e10
    assert float(audit.post) == pytest.approx(0.02 * float(w.detach().norm()), rel=1e-6)
    audit.check()


@pytest.mark.parametrize("mode", ["none", "backprop"])
def test_the_nan_guard_leaves_a_finite_gradient_alone(mode: str) -> None:
    w, params = recurrent_net(None)
    grads = [p.grad.clone() for p in params]
    pre, post, fired, failed, guarded = Clipper(mode, 1.0, nan_guard=True)(params,
                                                                          recurrent=[w])
    assert not bool(guarded) and not bool(fired) and not bool(failed)
    assert float(pre) == pytest.approx(float(torch.cat([g.flatten() for g in grads]).norm()))
    assert torch.equal(pre, post)
    for p, g in zip(params, grads, strict=True):
        assert torch.equal(p.grad, g)


def test_without_the_guard_a_nan_gradient_stays_nan() -> None:
    w, params = recurrent_net(math.nan)
    audit = Clipper("none", 1.0)(params, recurrent=[w])
    assert not bool(audit.guarded) and math.isnan(float(audit.post))
    assert torch.isnan(params[2].grad[0])


def test_the_guard_is_the_configs_and_reads_nothing_back() -> None:
    """`Clipper.of` takes `clip.nan_guard`; the guard decides on the device, so a step with it
    waits for no host read (tests/test_host_syncs.py)."""
    w, params = recurrent_net(math.inf)
    clipper = Clipper.of(ClipConfig(ClipMode.norm, 1.0, nan_guard=True))
    with HostReads() as reads:
        audit = clipper(params, recurrent=[w])
    assert reads.events == []
    assert bool(audit.guarded)


def test_the_guard_replaces_only_the_guarded_members_of_stacked_parameters() -> None:
    """For parameters stacked over K members (harness/batched.py), member k's slices are
    replaced where its own norm is untrustworthy, the others' left alone."""
    torch.manual_seed(0)
    w, u = nn.Parameter(torch.randn(3, 4, 4)), nn.Parameter(torch.randn(3, 4))
    for p in (w, u):
        p.grad = torch.randn_like(p)
    grads = [w.grad.clone(), u.grad.clone()]
    guarded = untrusted(torch.tensor([math.nan, 1.0, 1e11]))
    guard([w, u], guarded, recurrent=[w])
    for k in (0, 2):
        assert torch.equal(w.grad[k], GUARD_SHRINK * w.detach()[k])
        assert torch.equal(u.grad[k], torch.zeros(4))
    assert torch.equal(w.grad[1], grads[0][1]) and torch.equal(u.grad[1], grads[1][1])


def test_the_guard_needs_its_recurrent_matrices() -> None:
    w, params = recurrent_net(math.nan)
    clipper = Clipper("norm", 1.0, nan_guard=True)
    with pytest.raises(ValueError, match="clip.nan_guard: no recurrent matrix named"):
        clipper(params)
    with pytest.raises(ValueError, match="not among the parameters with a gradient"):
        clipper(params[1:], recurrent=[w])
