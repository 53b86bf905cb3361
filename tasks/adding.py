"""Adding problem, in the variant of Le, Jaitly & Hinton (2015) and Arjovsky et al. (2016).

Sources: Q. V. Le, N. Jaitly, G. E. Hinton, "A Simple Way to Initialize Recurrent Networks of
Rectified Linear Units", arXiv:1504.00941, section 4.1; M. Arjovsky, A. Shah, Y. Bengio,
"Unitary Evolution Recurrent Neural Networks", ICML 2016, section 4.2 (one marker in each
half). The accuracy criterion is from S. Hochreiter, J. Schmidhuber, "Long Short-Term
Memory", Neural Computation 1997, experiment 4.

Parameter: `gap` >= 2 (both halves must be non-empty). Sequence length L = gap.

inputs: float32 [B, L, 2].
- channel 0: values, i.i.d. U(0, 1) at every position;
- channel 1: markers, exactly two 1s and 0 elsewhere: one at a position uniform in the first
  half [0, L // 2), one at a position uniform in the second half [L // 2, L). The second
  marker may fall on the last step.

Example with gap=6:

    position:  0     1     2     3     4     5
    values:    0.31  0.90  0.12  0.77  0.45  0.08
    markers:   0     1     0     0     1     0
    targets:   0     0     0     0     0     1.35
    mask:      .     .     .     .     .     T

targets: float32 [B, L]: the sum S of the two marked values at the last step, 0 elsewhere.
mask: True at the last step only.
outputs: predictions [B, L, 1]; only the last step is used (output_size 1, regression).

loss: mean squared error at the last step, averaged over the batch.
accuracy: share of sequences whose absolute error at the last step is < 0.04.

chance: S = U1 + U2 has the triangular density 1 - |s - 1| on [0, 2], which is independent
of the positions, so the best memoryless prediction is a constant c:
- for MSE, c = E[S] = 1, with MSE = Var(U1) + Var(U2) = 1/12 + 1/12 = 1/6 ~ 0.1667;
- for accuracy, c = 1 (the mode) with P(|S - 1| < 0.04) = 1 - (1 - 0.04)^2
  = 2 * 0.04 - 0.04^2 = 0.0784.
"""

import torch

from tasks.base import Batch, Chance, Task, check_int, masked_within


class AddingTask(Task):
    """Output the sum of the two marked values at the end of the sequence."""

    name = "adding"
    regression = True
    tolerance = 0.04

    def __init__(self, gap: int) -> None:
        self.gap = check_int("gap", gap, 2, task=self.name)
        self.seq_len = self.gap
        self.input_size = 2
        self.output_size = 1
        self.chance = Chance(loss=1.0 / 6.0, accuracy=2 * self.tolerance - self.tolerance**2)

    def _generate(self, batch_size: int, generator: torch.Generator) -> Batch:
        length, half = self.seq_len, self.seq_len // 2
        values = torch.rand((batch_size, length), generator=generator, dtype=torch.float32)
        first = torch.randint(0, half, (batch_size, 1), generator=generator)
        second = torch.randint(half, length, (batch_size, 1), generator=generator)
        markers = torch.zeros((batch_size, length), dtype=torch.float32)
        markers.scatter_(1, first, 1.0)
        markers.scatter_(1, second, 1.0)
        targets = torch.zeros((batch_size, length), dtype=torch.float32)
        targets[:, -1] = (values.gather(1, first) + values.gather(1, second)).squeeze(1)
        mask = torch.zeros((batch_size, length), dtype=torch.bool)
        mask[:, -1] = True
        inputs = torch.stack((values, markers), dim=-1)
        return Batch(inputs=inputs, targets=targets, mask=mask)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.scored_loss(outputs, batch)

    def accuracy(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        self.check_outputs(outputs, batch)
        return masked_within(outputs.squeeze(-1), batch.targets, batch.mask, self.tolerance)
