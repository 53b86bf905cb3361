"""Selective copy: tokens scattered at random positions among blanks; reproduce them in order.

Source: A. Gu, T. Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
2023, section 3.1 and figure 2 (selective copying; their runs: 16 tokens from a vocabulary
of 16, sequence length 4096). The layout follows the generator of the state-spaces code
(copying with `variable=True`): the tokens sit at sorted random positions of the first
gap + n_tokens steps, the rest of which is a single blank ("noise") token, and then
n_tokens cue steps ask for them in order. Our defaults are smaller (8 symbols, 4 tokens).

Parameters (defaults in `SelectiveCopyConfig`): `gap` >= 1 (the number of blank
steps among the tokens, s4's `l_noise`), `vocab` >= 2, `n_tokens` >= 1, `gap_min`, `gap_max`
(variable gaps, `tasks.base`).

Tokens: 0 .. vocab-1 are the symbols, `vocab` is the blank, `vocab + 1` the cue. A sequence
has length L = gap + 2 * n_tokens:

- positions 0 .. gap + n_tokens - 1: n_tokens symbols, i.i.d. uniform over the vocab, at
  n_tokens distinct positions drawn uniformly (every subset equally likely) and kept in
  order; blanks everywhere else;
- the last n_tokens positions: the cue.

Example with gap=4, vocab=8, n_tokens=3 (b = blank = 8, c = cue = 9):

    position: 0  1  2  3  4  5  6  7  8  9
    tokens:   b  5  b  b  2  7  b  c  c  c
    targets:  0  0  0  0  0  0  0  5  2  7
    mask:     .  .  .  .  .  .  .  T  T  T

inputs: float32 [B, L, vocab + 2], the one-hot encoding of the tokens.
targets: int64 [B, L] over `vocab` classes: the n_tokens symbols in order at the cue steps,
0 elsewhere (not scored). mask: True at the last n_tokens steps.
outputs: logits [B, L, vocab]. loss: cross-entropy at the cue steps only (as in the
reference code, which scores only the outputs after the cue). accuracy: share of cue steps
whose argmax is the right symbol.

The distance between a token and the step that asks for it is random within a sequence,
between n_tokens and gap + n_tokens; `gap` bounds it. Variable gaps: a sequence with
gap g < gap draws its token positions among the last g + n_tokens steps before the cue (the
earlier gap - g steps are blanks, indistinguishable from the noise), so the cue steps stay
put and g bounds that sequence's distances.

chance: the symbols are i.i.d. uniform whatever their positions, so the best memoryless
predictor outputs the uniform distribution at every cue step: CE = ln(vocab), accuracy
1 / vocab per token.
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
class SelectiveCopyConfig(TaskConfig):
    """Selective copy's parameters (module docstring)."""

    gap: int = 100
    vocab: int = 8
    n_tokens: int = 4

    def check_values(self) -> None:
        super().check_values()
        self.require(self.vocab >= 2, "vocab", f"must be >= 2, got {self.vocab}")
        self.require(self.n_tokens >= 1, "n_tokens", f"must be >= 1, got {self.n_tokens}")


class SelectiveCopyTask(ClassificationTask):
    """Reproduce, at the cue, the few symbols scattered among blanks, in order."""

    name = "selective_copy"
    config_class = SelectiveCopyConfig
    vocab: int
    n_tokens: int

    def __init__(self, config: SelectiveCopyConfig) -> None:
        super().__init__(config)
        self.blank = self.vocab
        self.cue = self.vocab + 1
        self.region = self.gap + self.n_tokens  # where the symbols may sit
        self.seq_len = self.region + self.n_tokens
        self.input_size = self.vocab + 2
        self.output_size = self.vocab
        self.chance = Chance(loss=math.log(self.vocab), accuracy=1.0 / self.vocab)

    def _generate(self, batch_size: int, generator: torch.Generator, split: str) -> Batch:
        import torch
        shape = (batch_size, self.seq_len)
        symbols = torch.randint(self.vocab, (batch_size, self.n_tokens), generator=generator,
                                dtype=torch.int64)
        gaps = self.draw_gaps(batch_size, generator)
        # The n_tokens smallest of i.i.d. uniform keys: a uniformly random subset of positions.
        keys = torch.rand((batch_size, self.region), generator=generator, dtype=torch.float64)
        keys[torch.arange(self.region) < (self.gap - gaps).unsqueeze(1)] = math.inf
        positions = keys.topk(self.n_tokens, dim=1, largest=False).indices.sort(dim=1).values
        tokens = torch.full(shape, self.blank, dtype=torch.int64)
        tokens.scatter_(1, positions, symbols)
        tokens[:, self.region:] = self.cue
        targets = torch.zeros(shape, dtype=torch.int64)
        targets[:, self.region:] = symbols
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[:, self.region:] = True
        return Batch(one_hot(tokens, self.input_size), targets, mask, gaps)
