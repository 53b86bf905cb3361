"""Sequential digits: classify a real 8x8 handwritten digit fed one pixel per step (64 steps).

The small form of the pixel-by-pixel MNIST benchmark of Q. V. Le, N. Jaitly, G. E. Hinton,
"A Simple Way to Initialize Recurrent Networks of Rectified Linear Units", arXiv:1504.00941,
section 4.2 (sequential MNIST, 784 steps, and its permuted variant), on the UCI optical
recognition of handwritten digits data that ship with scikit-learn
(`sklearn.datasets.load_digits`: 1,797 images of 8x8 pixels with values 0..16, read from the
installed package, never downloaded).

Parameters (defaults in `SequentialDigitsConfig`): `gap` must be 64 (the sequence length is
fixed by the images), `permuted`, `permutation_seed`, `split_seed`, `gap_min` and `gap_max`
(None or 64: the length cannot vary).

Split: stratified 80/20, fixed by `split_seed` (not by the run's seed, so every run of a
sweep trains and is evaluated on the same images): for each digit, its images are shuffled
with a torch.Generator seeded with `split_seed` and the first round(0.2 * count) go to the
test part (359 test and 1,438 training images with split_seed 0). `sample(..., split="train")`
draws images uniformly with replacement from the training part, `split="eval"` from the test
part; the harness evaluates on the eval split.

inputs: float32 [B, 64, 1]: the pixels in row-major order (or, with `permuted`, in the order
of one fixed random permutation drawn with a torch.Generator seeded with
`permutation_seed`), scaled to [0, 1] as value / 16.
targets: int64 [B, 64]: the digit at the last step, 0 elsewhere (not scored).
mask: True at the last step only.
outputs: logits [B, 64, 10]. loss: cross-entropy at the last step only.
accuracy: share of images whose argmax at the last step is the digit.

chance: the best memoryless predictor outputs the class frequencies p of the split it is
scored on (the eval split: the test part), so CE = H(p) = -sum p_c ln p_c and accuracy =
max_c p_c. The classes are nearly balanced, so these are close to ln 10 and 1/10; with
split_seed 0 they are 2.3024 and 37/359 = 0.1031 (the 3s: 37 test images).

Differences from Le et al.: 8x8 images with 17 grey levels instead of 28x28 MNIST (64 steps
instead of 784), and batches drawn with replacement instead of epochs over the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from tasks.base import Batch, Chance, ClassificationTask, TaskConfig

if TYPE_CHECKING:
    import torch

N_PIXELS = 64
N_CLASSES = 10
TEST_SHARE = 0.2


@cache
def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """The scikit-learn digits: pixels float32 [1797, 64] in [0, 1] and labels int64 [1797]."""
    import torch
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes ~1 s to load

    digits = load_digits()
    pixels = torch.as_tensor(digits.data, dtype=torch.float32) / 16.0
    return pixels, torch.as_tensor(digits.target, dtype=torch.int64)


def stratified_split(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and test parts: round(20%) of each class to test."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for digit in range(N_CLASSES):  # ten classes: a loop over classes, not over samples
        members = (labels == digit).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = round(TEST_SHARE * len(members))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


@dataclass
class SequentialDigitsConfig(TaskConfig):
    """Sequential digits' parameters (module docstring)."""

    gap: int = N_PIXELS  # one step per pixel of an 8x8 image: fixed
    permuted: bool = False
    permutation_seed: int = 0
    split_seed: int = 0  # the fixed 80/20 train/test split

    def check_values(self) -> None:
        for key in ("gap", "gap_min", "gap_max"):
            value = getattr(self, key)
            self.require(value in (None, N_PIXELS) and (key != "gap" or value is not None), key,
                         f"must be {N_PIXELS} for sequential_digits (one step per pixel of an "
                         f"8x8 image){'' if key == 'gap' else ' or null'}, got {value}")
        for key in ("permutation_seed", "split_seed"):
            self.require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")


class SequentialDigitsTask(ClassificationTask):
    """Classify an 8x8 handwritten digit from its 64 pixels, one per step."""

    name = "sequential_digits"

    config_class = SequentialDigitsConfig
    permuted: bool
    permutation_seed: int
    split_seed: int

    def __init__(self, config: SequentialDigitsConfig) -> None:
        import torch
        super().__init__(config)
        pixels, self.labels = load_digits_tensors()
        self.order = torch.arange(N_PIXELS)
        if self.permuted:
            self.order = torch.randperm(
                N_PIXELS, generator=torch.Generator().manual_seed(self.permutation_seed))
        self.pixels = pixels[:, self.order]
        train, test = stratified_split(self.labels, self.split_seed)
        self.split_indices = {"train": train, "eval": test}
        self.seq_len = N_PIXELS
        self.input_size = 1
        self.output_size = N_CLASSES
        prior = torch.bincount(self.labels[test], minlength=N_CLASSES).double() / len(test)
        entropy = -float((prior * prior.log()).sum())
        self.chance = Chance(loss=entropy, accuracy=float(prior.max()))

    def _generate(self, batch_size: int, generator: torch.Generator, split: str) -> Batch:
        import torch
        indices = self.split_indices[split]
        chosen = indices[torch.randint(len(indices), (batch_size,), generator=generator)]
        shape = (batch_size, self.seq_len)
        targets = torch.zeros(shape, dtype=torch.int64)
        targets[:, -1] = self.labels[chosen]
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[:, -1] = True
        gaps = torch.full((batch_size,), self.gap, dtype=torch.int64)
        return Batch(self.pixels[chosen].unsqueeze(-1), targets, mask, gaps)
