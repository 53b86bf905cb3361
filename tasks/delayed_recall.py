"""Delayed recall: name the first symbol of the sequence when a cue arrives `gap` steps later.

The minimal form of "I grew up in France ... I speak fluent French": the answer is fixed by
the very first input and asked for only at the end (the example is from C. Olah,
"Understanding LSTM Networks", 2015). The closest published experiment is S. Hochreiter,
J. Schmidhuber, "Long Short-Term Memory", Neural Computation 1997, experiment 2 (recall the
first symbol after a long stretch of distractors); the parameters here are not theirs.

Parameters (defaults in `DelayedRecallConfig`): `gap` >= 1, `vocab` >= 2, `filler`
"blank" or "noise", `distractor_vocab` >= 1, `gap_min`, `gap_max` (variable gaps,
`tasks.base`).

Tokens: 0 .. vocab-1 are the symbols, vocab .. vocab+distractor_vocab-1 the distractors,
then the blank (vocab + distractor_vocab) and the cue (vocab + distractor_vocab + 1). The
input size D = vocab + distractor_vocab + 2 does not depend on `filler`, so a model sees the
same input width with either filler. A sequence has length L = gap + 2:

- position 0: one symbol, uniform over the vocab;
- positions 1 .. gap: filler: the blank with filler="blank"; with filler="noise", i.i.d.
  distractors uniform over the separate distractor vocabulary (never a symbol, so the
  filler cannot be confused with the answer);
- position gap + 1: the cue.

Example with gap=4, vocab=8, distractor_vocab=8, filler="noise" (c = cue = 17):

    position: 0  1   2   3   4   5
    tokens:   3  12  8   15  12  c
    targets:  0  0   0   0   0   3
    mask:     .  .   .   .   .   T

inputs: float32 [B, L, D], the one-hot encoding of the tokens.
targets: int64 [B, L] over `vocab` classes: the first symbol at the cue step, 0 elsewhere
(those positions are masked out and never scored).
mask: True at the cue step only.
outputs: logits [B, L, vocab].

loss: cross-entropy at the cue step only, averaged over the batch.
accuracy: share of sequences whose argmax at the cue step equals the first symbol.

Variable gaps: a sequence with gap g < gap starts with gap - g blanks (whatever the filler),
then the symbol, g filler steps and the cue; the cue stays at position gap + 1.

chance: without memory of position 0 the target is uniform over the vocab, so the best
memoryless predictor has CE = ln(vocab) (2.0794 for vocab 8) and accuracy 1 / vocab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
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


class Filler(StrEnum):
    blank = "blank"
    noise = "noise"


@dataclass
class DelayedRecallConfig(TaskConfig):
    """Delayed recall's parameters (module docstring)."""

    gap: int = 20
    vocab: int = 8
    filler: Filler = Filler.blank
    distractor_vocab: int = 8

    def check_values(self) -> None:
        super().check_values()
        self.require(self.vocab >= 2, "vocab", f"must be >= 2, got {self.vocab}")
        self.require(self.distractor_vocab >= 1, "distractor_vocab",
                     f"must be >= 1, got {self.distractor_vocab}")


class DelayedRecallTask(ClassificationTask):
    """Recall the first symbol at the cue, after `gap` steps of blank or noise filler."""

    name = "delayed_recall"
    config_class = DelayedRecallConfig
    vocab: int
    filler: str
    distractor_vocab: int

    def __init__(self, config: DelayedRecallConfig) -> None:
        super().__init__(config)
        self.blank = self.vocab + self.distractor_vocab
        self.cue = self.blank + 1
        self.cue_position = self.gap + 1
        self.seq_len = self.gap + 2
        self.input_size = self.vocab + self.distractor_vocab + 2
        self.output_size = self.vocab
        self.chance = Chance(loss=math.log(self.vocab), accuracy=1.0 / self.vocab)

    def _generate(self, batch_size: int, generator: torch.Generator, split: str) -> Batch:
        import torch
        shape = (batch_size, self.seq_len)
        first = torch.randint(self.vocab, (batch_size,), generator=generator, dtype=torch.int64)
        tokens = torch.full(shape, self.blank, dtype=torch.int64)
        if self.filler == "noise":
            tokens[:, 1 : self.cue_position] = torch.randint(
                self.vocab,
                self.vocab + self.distractor_vocab,
                (batch_size, self.gap),
                generator=generator,
                dtype=torch.int64,
            )
        gaps = self.draw_gaps(batch_size, generator)
        start = (self.gap - gaps).unsqueeze(1)
        positions = torch.arange(self.seq_len)
        tokens[positions < start] = self.blank
        tokens.scatter_(1, start, first.unsqueeze(1))
        tokens[:, self.cue_position] = self.cue
        targets = torch.zeros(shape, dtype=torch.int64)
        targets[:, self.cue_position] = first
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[:, self.cue_position] = True
        return Batch(one_hot(tokens, self.input_size), targets, mask, gaps)
