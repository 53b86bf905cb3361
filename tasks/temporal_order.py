"""Temporal order: classify the order of two (or three) relevant symbols hidden among distractors.

Sources: S. Hochreiter, J. Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8),
1997, experiments 6a (two relevant symbols, 4 classes) and 6b (three, 8 classes); the
scaled-window form of R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training
recurrent neural networks", ICML 2013 (their code: relevant symbols in [0.1 L, 0.2 L) and
[0.5 L, 0.6 L), no start or trigger symbol, 6 inputs, 4 classes). The gap is the sequence
length L.

Parameters (defaults in `TemporalOrderConfig`): `gap` >= 10 (= L), `n_relevant` 2
(4 classes) or 3 (8 classes), `gap_min`, `gap_max` (variable gaps, `tasks.base`).

Tokens: 0 = X, 1 = Y (the relevant symbols), 2 .. 5 = the distractors a, b, c, d, 6 = blank
(used only to left-pad sequences shorter than the batch, see below). inputs: float32
[B, L, 7], the one-hot encoding of the tokens.

A sequence of length n (n = L unless gaps vary):
- every step holds a distractor, i.i.d. uniform over a .. d, except
- the k-th relevant symbol, X or Y with probability 1/2 each, at a step uniform in the window
  [n * s_k // 100, n * s_k // 100 + n // 10) with starts s = (10, 50) for two symbols
  (Pascanu et al. 2013) and s = (10, 33, 66) for three (Hochreiter & Schmidhuber's 6b
  windows [10, 20], [33, 43], [66, 76] at T = 100, scaled like Pascanu's). The windows never
  overlap for n >= 10.
- target class: sum over k of [symbol k is Y] * 2^k (2 symbols: XX 0, YX 1, XY 2, YY 3), at
  the last step; 0 elsewhere (not scored).

Example with gap=10, n_relevant=2 (windows [1, 2) and [5, 6)):

    position: 0  1  2  3  4  5  6  7  8  9
    tokens:   c  Y  a  d  b  X  a  c  c  b
    targets:  0  0  0  0  0  0  0  0  0  1
    mask:     .  .  .  .  .  .  .  .  .  T

Variable gaps: a sequence of length n < gap is preceded by gap - n blanks, so that it ends at
the batch's last step (the scored one); its windows are those of length n.

outputs: logits [B, L, 2^n_relevant]. loss: cross-entropy at the last step only.
accuracy: share of sequences whose argmax at the last step is the class.

Differences from Hochreiter & Schmidhuber: no start symbol E and no trigger symbol B (as in
Pascanu et al.'s version), the windows scale with L instead of being fixed at T = 100, and
the length is `gap` (or drawn from [gap_min, gap]) instead of uniform in [100, 110].

chance: the symbols are independent fair coins, so the class is uniform over 2^n_relevant
values whatever the position: the best memoryless predictor has CE = ln 4 (ln 8) and
accuracy 1/4 (1/8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tasks.base import (
    Batch,
    Chance,
    ClassificationTask,
    TaskConfig,
    one_hot,
    randint_rows,
)

if TYPE_CHECKING:
    import torch

WINDOW_STARTS = {2: (10, 50), 3: (10, 33, 66)}  # percent of the sequence length
N_DISTRACTORS = 4


@dataclass
class TemporalOrderConfig(TaskConfig):
    """Temporal order's parameters (module docstring)."""

    gap: int = 100
    n_relevant: int = 2  # 2: four classes (XX, YX, XY, YY); 3: eight classes
    min_gap: ClassVar[int] = 10  # the windows are L // 10 wide

    def check_values(self) -> None:
        super().check_values()
        self.require(self.n_relevant in WINDOW_STARTS, "n_relevant",
                     f"must be 2 or 3, got {self.n_relevant}")


class TemporalOrderTask(ClassificationTask):
    """Classify the order of X/Y symbols placed in early and middle windows."""

    name = "temporal_order"
    config_class = TemporalOrderConfig
    n_relevant: int

    def __init__(self, config: TemporalOrderConfig) -> None:
        super().__init__(config)
        self.blank = 2 + N_DISTRACTORS
        self.seq_len = self.gap
        self.input_size = self.blank + 1
        self.output_size = 2**self.n_relevant
        self.chance = Chance(loss=math.log(self.output_size), accuracy=1.0 / self.output_size)

    def _generate(self, batch_size: int, generator: torch.Generator, split: str) -> Batch:
        import torch
        shape = (batch_size, self.seq_len)
        tokens = torch.randint(2, 2 + N_DISTRACTORS, shape, generator=generator,
                               dtype=torch.int64)
        symbols = torch.randint(2, (batch_size, self.n_relevant), generator=generator,
                                dtype=torch.int64)
        gaps = self.draw_gaps(batch_size, generator)
        start = self.gap - gaps
        width = gaps // 10
        positions = torch.stack([
            start + gaps * percent // 100 + randint_rows(torch.zeros_like(width), width, generator)
            for percent in WINDOW_STARTS[self.n_relevant]
        ], dim=1)
        tokens[torch.arange(self.seq_len) < start.unsqueeze(1)] = self.blank
        tokens.scatter_(1, positions, symbols)
        targets = torch.zeros(shape, dtype=torch.int64)
        targets[:, -1] = (symbols * 2 ** torch.arange(self.n_relevant)).sum(dim=1)
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(one_hot(tokens, self.input_size), targets, mask, gaps)
