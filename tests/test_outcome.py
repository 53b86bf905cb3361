"""How a run ended (harness.outcome) and what "solved" means per task (tasks.base.Success)."""

import pytest

from harness import names
from harness.outcome import end_state
from tasks import TASKS
from tasks.base import ACCURACY_SUCCESS, Success


def history(losses, every=100):
    return [(every * (i + 1), loss) for i, loss in enumerate(losses)]


def test_status_solved_and_diverged_pass_through():
    assert end_state(names.SOLVED, history([1.0, 0.5])) == names.SOLVED
    assert end_state(names.DIVERGED, history([1.0, 5.0])) == names.DIVERGED


def test_flat_at_memoryless_level_is_chance():
    assert end_state(names.UNSOLVED, history([1.0, 0.99, 1.01, 0.98, 1.0, 0.97, 0.99, 1.0])) \
        == names.CHANCE


def test_still_falling_at_the_end_is_improving():
    # At the memoryless level for most of the budget, then dropping (copy's typical shape).
    losses = [1.0, 1.0, 0.99, 1.0, 0.99, 1.0, 0.8, 0.6]
    assert end_state(names.UNSOLVED, history(losses)) == names.IMPROVING


def test_learned_then_flat_is_plateau():
    losses = [1.0, 0.7, 0.5, 0.45, 0.44, 0.44, 0.45, 0.44]
    assert end_state(names.UNSOLVED, history(losses)) == names.PLATEAU


def test_tiny_late_drop_is_not_improving():
    # 0.01 below the earlier minimum: under IMPROVING_DROP, noise rather than a trend.
    losses = [1.0, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.49]
    assert end_state(names.UNSOLVED, history(losses)) == names.PLATEAU


def test_small_relative_drop_is_not_improving():
    # 0.03 absolute, but only 3% of 1.0: under IMPROVING_RATIO.
    losses = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.97]
    assert end_state(names.UNSOLVED, history(losses)) == names.CHANCE


def test_too_few_evaluations_show_no_trend():
    assert end_state(names.UNSOLVED, history([1.0, 0.5])) == names.PLATEAU
    assert end_state(names.UNSOLVED, history([1.0, 0.95])) == names.CHANCE
    assert end_state(names.UNSOLVED, []) == names.CHANCE


def test_accuracy_success():
    assert ACCURACY_SUCCESS.met(0.99, 0.5)
    assert not ACCURACY_SUCCESS.met(0.98, 0.0)
    assert ACCURACY_SUCCESS.met(0.95, 1.0, threshold=0.9)
    assert ACCURACY_SUCCESS.describe() == "eval accuracy >= 0.99"


def test_adding_judges_by_mse_not_by_share_within_tolerance():
    success = TASKS["adding"].success
    assert success.measure == "loss_ratio"
    # The IndRNN check: MSE 0.001 of a memoryless 1/6 is solved, whatever share lies in 0.04.
    assert success.met(accuracy=0.84, loss_ratio=0.001 / (1 / 6))
    assert not success.met(accuracy=1.0, loss_ratio=0.2)
    assert success.describe() == "eval loss / chance loss <= 0.06"


def test_every_task_declares_a_criterion_with_a_source():
    for name, task in TASKS.items():
        assert task.success.measure in Success.MEASURES, name
        assert task.success.source, name
        if task.regression:
            assert task.success.measure == "loss_ratio", name


def test_unknown_measure_is_refused():
    with pytest.raises(ValueError, match="measure"):
        Success("f1", 0.5, "nowhere")
