"""Copy memory task, in the variant of Arjovsky, Shah & Bengio (2016).

Source: M. Arjovsky, A. Shah, Y. Bengio, "Unitary Evolution Recurrent Neural Networks",
ICML 2016, section 4.1 (after Hochreiter & Schmidhuber 1997); their T is our `gap`.

Parameters (defaults in `CopyConfig`): `gap` >= 1, `n_symbols` >= 2, `n_recall`
>= 1, `gap_min`, `gap_max` (variable gaps, `tasks.base`).

Tokens: 0 .. n_symbols-1 are the symbols, `n_symbols` is the blank, `n_symbols + 1` the
delimiter. A sequence has length L = gap + 2 * n_recall (gap + 20 by default):

- positions 0 .. n_recall-1: n_recall symbols, i.i.d. uniform over the n_symbols symbols;
- positions n_recall .. n_recall+gap-2: gap - 1 blanks;
- position n_recall + gap - 1 (gap + 9 by default): the delimiter;
- the last n_recall positions: blanks.

Example with gap=3, n_symbols=8, n_recall=3 (b = blank = 8, d = delimiter = 9):

    position: 0  1  2  3  4  5  6  7  8
    tokens:   5  0  7  b  b  d  b  b  b
    targets:  b  b  b  b  b  b  5  0  7
    mask:     .  .  .  .  .  .  T  T  T

inputs: float32 [B, L, n_symbols + 2], the one-hot encoding of the tokens.
targets: int64 [B, L] over n_symbols + 1 classes (the symbols, and the blank = class
n_symbols): the blank everywhere except the last n_recall positions, which hold the n_recall
symbols in their original order.
mask: True on the last n_recall positions only.
outputs: logits [B, L, n_symbols + 1].

loss: cross-entropy averaged over ALL L positions and the batch, as published (so it
shrinks with the gap even for a model that recalls nothing).
accuracy: share of the masked (recall) positions whose argmax equals the target symbol.

Variable gaps: a sequence with gap g < gap starts with gap - g blanks (targets blank, not
scored), then the layout above at gap g. The delimiter and the recall window stay at the
same positions; only the symbols move earlier. L, the published loss's denominator, does not
change, so neither does chance.

chance: the best memoryless predictor outputs the blank with certainty outside the recall
window (cross-entropy 0) and the uniform distribution over the symbols inside it
(ln n_symbols each), so
    CE = n_recall * ln(n_symbols) / (gap + 2 * n_recall)
(0.1733 at gap 100, 0.0945 at gap 200 with the defaults) and recall accuracy = 1 / n_symbols.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tasks.base import (
    Batch,
    Chance,
    ClassificationTask,
    TaskConfig,
    one_hot,
    sequence_cross_entropy,
)

if TYPE_CHECKING:
    import torch


@dataclass
class CopyConfig(TaskConfig):
    """The copy task's parameters (module docstring)."""

    gap: int = 100
    n_symbols: int = 8
    n_recall: int = 10

    def check_values(self) -> None:
        super().check_values()
        self.require(self.n_symbols >= 2, "n_symbols", f"must be >= 2, got {self.n_symbols}")
        self.require(self.n_recall >= 1, "n_recall", f"must be >= 1, got {self.n_recall}")


class CopyTask(ClassificationTask):
    """Recall n_recall symbols, in order, gap steps after they were shown."""

    name = "copy"
    config_class = CopyConfig
    n_symbols: int
    n_recall: int

    def __init__(self, config: CopyConfig) -> None:
        super().__init__(config)
        self.blank = self.n_symbols
        self.delimiter = self.n_symbols + 1
        self.delimiter_position = self.n_recall + self.gap - 1
        self.seq_len = self.gap + 2 * self.n_recall
        self.input_size = self.n_symbols + 2
        self.output_size = self.n_symbols + 1
        self.chance = Chance(
            loss=self.n_recall * math.log(self.n_symbols) / self.seq_len,
            accuracy=1.0 / self.n_symbols,
        )

    def _generate(self, batch_size: int, generator: torch.Generator, split: str) -> Batch:
        import torch
        shape = (batch_size, self.seq_len)
        symbols = torch.randint(
            self.n_symbols, (batch_size, self.n_recall), generator=generator, dtype=torch.int64
        )
        gaps = self.draw_gaps(batch_size, generator)
        positions = (self.gap - gaps).unsqueeze(1) + torch.arange(self.n_recall)
        tokens = torch.full(shape, self.blank, dtype=torch.int64)
        tokens.scatter_(1, positions, symbols)
        tokens[:, self.delimiter_position] = self.delimiter
        targets = torch.full(shape, self.blank, dtype=torch.int64)
        targets[:, -self.n_recall :] = symbols
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[:, -self.n_recall :] = True
        return Batch(one_hot(tokens, self.input_size), targets, mask, gaps)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        self.check_outputs(outputs, batch)
        return sequence_cross_entropy(outputs, batch.targets)
