"""Multi-query associative recall: key-value pairs, a stretch of blanks, then every key again;
answer each key with its value.

Source: S. Arora, S. Eyuboglu, A. Timalsina, I. Johnson, M. Poli, J. Zou, A. Rudra, C. Ré,
"Zoology: Measuring and Improving Recall in Efficient Language Models", 2023 (MQAR, their
`multiquery_ar` generator): keys and values from disjoint halves of the vocabulary, each key
and each value used once per sequence, every key queried.

Parameters (defaults in `AssociativeRecallConfig`): `gap` >= 1 (the number of blank steps
between the last pair and the first query), `vocab` >= 4, even, `n_pairs` >= 1, at most
vocab / 2, `gap_min`, `gap_max` (variable gaps, `tasks.base`).

Tokens: 0 .. vocab/2 - 1 are the keys, vocab/2 .. vocab - 1 the values, `vocab` the blank.
With K = n_pairs a sequence has length L = 3K + gap:

- positions 0 .. 2K - 1: K pairs (key, value): K distinct keys and K distinct values, each
  set uniform among the subsets of its half (and in random order);
- positions 2K .. 2K + gap - 1: blanks;
- the last K positions: the K keys again, in a uniformly random order (a query).

Example with gap=3, vocab=8, n_pairs=2 (keys 0..3, values 4..7, b = blank = 8):

    position: 0  1  2  3  4  5  6  7  8
    tokens:   3  6  0  4  b  b  b  0  3
    targets:  0  0  0  0  0  0  0  0  2
    mask:     .  .  .  .  .  .  .  T  T

inputs: float32 [B, L, vocab + 1], the one-hot encoding of the tokens.
targets: int64 [B, L] over vocab/2 classes: at a query, the queried key's value minus vocab/2
(value 4 is class 0 above); 0 elsewhere (not scored). mask: True at the last K positions.
outputs: logits [B, L, vocab / 2]. loss: cross-entropy at the queries only. accuracy: share
of queries answered with the right value.

The distance from pair i (its value at 2i + 1) to its query at 2K + gap + j is
gap + 2(K - 1 - i) + j + 1, between gap + 1 and gap + 3K - 2 (gap + 1 for the last pair asked
first); `gap` is the part of it that the task varies. Variable gaps: a sequence with gap
g < gap starts with gap - g blanks and then has g blanks between its pairs and its queries;
the queries stay at the last K positions.

Differences from Zoology: the queries come in one block at the end after a blank stretch
(Zoology scatters them over the rest of the sequence at power-law distances, among random
tokens) and the answer is scored at the query step itself (Zoology's label is the next
token, which is the same prediction made at the same step).

chance: by symmetry the value asked at any query step is uniform over the vocab/2 values, so
the best memoryless predictor has CE = ln(vocab / 2) (2.0794 for vocab 16) and accuracy
2 / vocab. (A model that remembered which values occurred but not their keys would reach
1 / K; that is memory, not chance.)
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
)

if TYPE_CHECKING:
    import torch


@dataclass
class AssociativeRecallConfig(TaskConfig):
    """Multi-query associative recall's parameters (module docstring)."""

    gap: int = 20
    vocab: int = 16  # keys: the first half, values: the second half
    n_pairs: int = 4

    def check_values(self) -> None:
        super().check_values()
        self.require(self.vocab >= 4 and self.vocab % 2 == 0, "vocab",
                     f"must be even and >= 4 (keys and values are its halves), got {self.vocab}")
        self.require(1 <= self.n_pairs <= self.vocab // 2, "n_pairs",
                     f"must be in [1, task.vocab / 2 = {self.vocab // 2}] (distinct keys), "
                     f"got {self.n_pairs}")


def random_subsets(batch_size: int, population: int, size: int,
                   generator: torch.Generator) -> torch.Tensor:
    """`size` distinct integers from [0, population) per row, in uniformly random order."""
    import torch
    keys = torch.rand((batch_size, population), generator=generator, dtype=torch.float64)
    return keys.argsort(dim=1)[:, :size]


class AssociativeRecallTask(ClassificationTask):
    """Answer every key, asked again after `gap` blanks, with the value it was paired with."""

    name = "associative_recall"

    config_class = AssociativeRecallConfig
    vocab: int
    n_pairs: int

    def __init__(self, config: AssociativeRecallConfig) -> None:
        super().__init__(config)
        self.half = self.vocab // 2
        self.blank = self.vocab
        self.seq_len = 3 * self.n_pairs + self.gap
        self.input_size = self.vocab + 1
        self.output_size = self.half
        self.chance = Chance(loss=math.log(self.half), accuracy=1.0 / self.half)

    def _generate(self, batch_size: int, generator: torch.Generator, split: str) -> Batch:
        import torch
        k, shape = self.n_pairs, (batch_size, self.seq_len)
        keys = random_subsets(batch_size, self.half, k, generator)
        values = random_subsets(batch_size, self.half, k, generator)  # class ids
        order = random_subsets(batch_size, k, k, generator)  # which pair each query asks
        gaps = self.draw_gaps(batch_size, generator)
        pair_positions = (self.gap - gaps).unsqueeze(1) + torch.arange(2 * k)
        pairs = torch.stack((keys, values + self.half), dim=2).flatten(1)
        tokens = torch.full(shape, self.blank, dtype=torch.int64)
        tokens.scatter_(1, pair_positions, pairs)
        tokens[:, -k:] = keys.gather(1, order)
        targets = torch.zeros(shape, dtype=torch.int64)
        targets[:, -k:] = values.gather(1, order)
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[:, -k:] = True
        return Batch(one_hot(tokens, self.input_size), targets, mask, gaps)
