"""How a run ended: solved, diverged, or, for an unsolved run, why it is unsolved.

A fixed step budget mixes "cannot" with "not yet": the losses of copy and adding sit at the
memoryless level for thousands of steps, then drop. So every run's end is classified from its
history of held-out losses, normalized by the task's memoryless (chance) loss:

- `solved` / `diverged`: as the run's status says.
- `improving`: unsolved, and the loss was still falling at the end of the budget: the lowest
  normalized eval loss of the last quarter of the steps is at least IMPROVING_DROP below the
  lowest before it, in absolute terms, and at least IMPROVING_RATIO of it in relative terms.
  The budget, not the model, decided this run: it is *censored*, never a failure.
- `chance`: unsolved, not improving, and the loss never left the memoryless level: every
  normalized eval loss is at least CHANCE_LEVEL.
- `plateau`: unsolved, not improving, below the memoryless level at some point: it learned
  something, then stopped improving.

A run with fewer than MIN_EVALS evaluations cannot show a trend; it is `chance` or `plateau`
by its losses alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness import names

IMPROVING_DROP = 0.02  # in units of the chance loss
IMPROVING_RATIO = 0.1  # the late minimum is at least 10% below the earlier one
CHANCE_LEVEL = 0.9  # a normalized eval loss at or above this is at the memoryless level
LATE_SHARE = 0.25  # "the end of the budget": the last quarter of the steps run
MIN_EVALS = 4


def end_state(status: str, history: Sequence[tuple[int, float]]) -> str:
    """One of names.END_STATES for a run of `status` whose evaluations were
    `history` = [(step, eval loss / chance loss), ...] in step order."""
    if status in (names.SOLVED, names.DIVERGED):
        return status
    losses = [loss for _, loss in history]
    if not losses:
        return names.CHANCE
    at_chance = min(losses) >= CHANCE_LEVEL
    if len(history) >= MIN_EVALS and improving(history):
        return names.IMPROVING
    return names.CHANCE if at_chance else names.PLATEAU


def improving(history: Sequence[tuple[int, float]]) -> bool:
    """Whether the loss still fell in the last LATE_SHARE of the steps (module docstring)."""
    last = history[-1][0]
    cut = last - LATE_SHARE * last
    early = [loss for step, loss in history if step <= cut]
    late = [loss for step, loss in history if step > cut]
    if not early or not late:
        return False
    before, after = min(early), min(late)
    return before - after >= IMPROVING_DROP and after <= (1 - IMPROVING_RATIO) * before
