"""Tests of the task generators: chance levels measured on generated data, the layout of every
sequence (exactly, per sequence, over many gaps and seeds), variable gaps, the sequential
digits' data, determinism of the generator stream and the exact data of a seed, and the
loss/accuracy semantics. Chance levels are measured on >= 10,000 generated sequences.

The task configs (parameters, defaults, checks) and the registry are tested in
test_tasks_config.py and test_task_registry.py."""

import hashlib
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import TASKS, Batch, Task, make_task
from tasks.base import randint_rows
from tasks.copy import CopyTask
from tasks.sequential_digits import SequentialDigitsConfig, load_digits_tensors, stratified_split
from tasks.temporal_order import WINDOW_STARTS

SEEDS = st.integers(min_value=0, max_value=2**31 - 1)


FAST = settings(max_examples=50, deadline=None)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tokens_of(batch: Batch) -> torch.Tensor:
    """Token ids of a one-hot batch, after checking that it really is one-hot."""
    assert torch.all(batch.inputs.sum(dim=-1) == 1)
    assert torch.all((batch.inputs == 0) | (batch.inputs == 1))
    return batch.inputs.argmax(dim=-1)


# --- chance levels, measured ---------------------------------------------------------------
#
# Copy, delayed recall and adding: relative tolerance 1%. The sample sizes make 1% at least
# ~4 standard errors of the accuracy estimates, the noisiest figures (binomial, p = 1/8:
# 1.2e6 scored positions give SE 3.0e-4 against a 1% band of 1.25e-3; adding, p = 0.0784:
# 2.4e6 sequences give SE 1.7e-4 against 7.8e-4; adding MSE has per-sequence SD
# sqrt(7/180) = 0.197, SE 1.3e-4 against 1.7e-3). The cross-entropies are far tighter because
# -log p_hat is nearly constant. The other tasks: accuracy within 5 binomial standard errors
# of the analytic figure, cross-entropy and MSE within 1%.

REL = 0.01


def memoryless(task: Task, n_fit: int, n_loss: int | None = None, n_accuracy: int | None = None,
               chunk: int = 10_000, split: str = "train") -> tuple[float, float, int]:
    """Loss and accuracy of the empirical best memoryless classifier, via task.loss/accuracy,
    and the number of items its accuracy was measured on.

    The per-position marginal of the targets is estimated on `n_fit` sequences and scored on
    fresh ones (loss on the first `n_loss`, accuracy on the first `n_accuracy`; both `n_fit`
    unless given), so the figures are not flattered by fitting and scoring the same data.
    Chunks keep memory bounded; all chunks have the same size and the same number of scored
    positions, so the mean over chunks is the mean over all sequences.
    """
    n_loss = n_fit if n_loss is None else n_loss
    n_accuracy = n_fit if n_accuracy is None else n_accuracy
    assert n_fit % chunk == 0 and n_loss % chunk == 0 and n_accuracy % chunk == 0
    counts = torch.zeros(task.seq_len, task.output_size, dtype=torch.float64)
    fit = generator(1234)
    for _ in range(n_fit // chunk):
        targets = task.sample(chunk, fit, split).targets
        counts += torch.nn.functional.one_hot(targets, task.output_size).sum(dim=0)
    marginal = counts / counts.sum(dim=-1, keepdim=True)
    # log(0) would be -inf; a floor of 1e-12 changes the loss by < 1e-10 nats.
    outputs = marginal.clamp_min(1e-12).log().to(torch.float32).expand(chunk, -1, -1)
    losses, accuracies, items = [], [], 0
    score = generator(5678)
    for i in range(max(n_loss, n_accuracy) // chunk):
        batch = task.sample(chunk, score, split)
        if i < n_loss // chunk:
            losses.append(task.loss(outputs, batch).item())
        if i < n_accuracy // chunk:
            accuracies.append(task.accuracy(outputs, batch).item())
            items += int(batch.mask.sum())
    return sum(losses) / len(losses), sum(accuracies) / len(accuracies), items


def within_binomial(measured: float, p: float, items: int) -> bool:
    return abs(measured - p) < 5 * math.sqrt(p * (1 - p) / items)


@pytest.mark.parametrize(("gap", "published_ce"), [(100, 0.1733), (200, 0.0945)])
def test_copy_chance_measured(gap: int, published_ce: float) -> None:
    task = make_task("copy", gap=gap)
    # The analytic figure matches the numbers quoted by Arjovsky et al. (2016).
    assert task.chance.loss == pytest.approx(published_ce, abs=5e-5)
    # The loss is nearly deterministic per sequence (SE ~1e-6 at 20,000 sequences); the
    # accuracy is binomial and needs 120,000 sequences = 1.2e6 recall positions.
    loss, accuracy, _ = memoryless(
        task, n_fit=20_000, n_loss=20_000, n_accuracy=120_000, chunk=10_000
    )
    assert loss == pytest.approx(published_ce, rel=REL)
    assert loss == pytest.approx(task.chance.loss, rel=REL)
    assert accuracy == pytest.approx(task.chance.accuracy, rel=REL)
    assert accuracy == pytest.approx(1 / 8, rel=REL)


def test_delayed_recall_chance_measured() -> None:
    task = make_task("delayed_recall", gap=3, filler="noise")
    loss, accuracy, _ = memoryless(
        task, n_fit=200_000, n_loss=200_000, n_accuracy=1_200_000, chunk=200_000
    )
    assert loss == pytest.approx(math.log(8), rel=REL)
    assert loss == pytest.approx(task.chance.loss, rel=REL)
    assert accuracy == pytest.approx(1 / 8, rel=REL)
    assert accuracy == pytest.approx(task.chance.accuracy, rel=REL)


def test_adding_chance_measured() -> None:
    task = make_task("adding", gap=10)
    chunk, n = 400_000, 2_400_000
    constant_one = torch.ones(chunk, task.seq_len, 1)
    losses, accuracies = [], []
    rng = generator(42)
    for _ in range(n // chunk):
        batch = task.sample(chunk, rng)
        losses.append(task.loss(constant_one, batch).item())
        accuracies.append(task.accuracy(constant_one, batch).item())
    loss, accuracy = sum(losses) / len(losses), sum(accuracies) / len(accuracies)
    assert task.chance.loss == pytest.approx(1 / 6)
    assert task.chance.accuracy == pytest.approx(0.0784)
    assert loss == pytest.approx(task.chance.loss, rel=REL)
    assert accuracy == pytest.approx(task.chance.accuracy, rel=REL)


@pytest.mark.parametrize(("name", "params", "loss", "accuracy"), [
    ("temporal_order", {"gap": 10}, math.log(4), 1 / 4),
    ("temporal_order", {"gap": 20, "n_relevant": 3, "gap_min": 10}, math.log(8), 1 / 8),
    ("selective_copy", {"gap": 4}, math.log(8), 1 / 8),
    ("selective_copy", {"gap": 8, "gap_min": 1, "vocab": 5, "n_tokens": 3}, math.log(5), 1 / 5),
    ("associative_recall", {"gap": 2}, math.log(8), 1 / 8),
    ("associative_recall", {"gap": 6, "gap_min": 1, "vocab": 8, "n_pairs": 3}, math.log(4),
     1 / 4),
    ("copy", {"gap": 10, "gap_min": 1}, 10 * math.log(8) / 30, 1 / 8),
    ("delayed_recall", {"gap": 10, "gap_min": 1, "filler": "noise"}, math.log(8), 1 / 8),
])
def test_chance_measured(name: str, params: dict, loss: float, accuracy: float) -> None:
    task = make_task(name, **params)
    assert task.chance.loss == pytest.approx(loss) and task.chance.accuracy == accuracy
    measured_loss, measured_accuracy, items = memoryless(task, 100_000)
    assert measured_loss == pytest.approx(task.chance.loss, rel=0.01)
    assert within_binomial(measured_accuracy, task.chance.accuracy, items)


@pytest.mark.parametrize(("variant", "gap_min", "mse", "accuracy"), [
    ("sum", None, 1 / 6, 0.0784),
    ("sum", 2, 1 / 6, 0.0784),
    ("mean", None, 1 / 24, 0.1536),
    ("hochreiter1997", None, 19 / 480, 0.15424),
])
def test_adding_variant_chance_measured(variant: str, gap_min: int | None, mse: float,
                                        accuracy: float) -> None:
    task = make_task("adding", gap=20, variant=variant, gap_min=gap_min)
    assert task.chance.loss == pytest.approx(mse) and task.chance.accuracy == pytest.approx(
        accuracy)
    best = 1.0 if variant == "sum" else 0.5
    chunk, n = 100_000, 400_000
    totals: dict[float, list[float]] = {}
    rng = generator(42)
    for _ in range(n // chunk):
        batch = task.sample(chunk, rng)
        for constant in (best - 0.05, best, best + 0.05):
            outputs = torch.full((chunk, task.seq_len, 1), constant)
            scores = totals.setdefault(constant, [0.0, 0.0])
            scores[0] += task.loss(outputs, batch).item() / (n // chunk)
            scores[1] += task.accuracy(outputs, batch).item() / (n // chunk)
    loss, hits = totals[best]
    assert loss == pytest.approx(task.chance.loss, rel=0.01)
    assert within_binomial(hits, task.chance.accuracy, n)
    for constant in (best - 0.05, best + 0.05):  # the chance constant is the best one
        assert totals[constant][0] > loss and totals[constant][1] < hits


def test_digits_chance_measured_on_the_eval_split() -> None:
    task = SequentialDigitsConfig().build()
    _, labels = load_digits_tensors()
    test_labels = labels[task.split_indices["eval"]]
    assert int(torch.bincount(test_labels).max()) == 37 and len(test_labels) == 359
    assert task.chance.accuracy == pytest.approx(37 / 359)
    assert task.chance.loss == pytest.approx(2.3025, abs=1e-4)
    assert task.chance.loss < math.log(10)
    loss, accuracy, items = memoryless(task, 100_000, split="eval")
    assert loss == pytest.approx(task.chance.loss, rel=0.01)
    assert within_binomial(accuracy, task.chance.accuracy, items)


# --- layouts, per sequence --------------------------------------------------------------------


@FAST
@given(gap=st.integers(1, 300), seed=SEEDS, batch_size=st.integers(1, 8))
def test_copy_structure(gap: int, seed: int, batch_size: int) -> None:
    task = make_task("copy", gap=gap)
    batch = task.sample(batch_size, generator(seed))
    length = gap + 20
    assert task.seq_len == length and task.gap == gap
    assert (task.input_size, task.output_size, task.regression) == (10, 9, False)
    assert batch.inputs.shape == (batch_size, length, 10) and batch.inputs.dtype == torch.float32
    assert batch.targets.shape == (batch_size, length) and batch.targets.dtype == torch.int64
    assert batch.mask.shape == (batch_size, length) and batch.mask.dtype == torch.bool
    tokens = tokens_of(batch)
    blank, delimiter = 8, 9
    assert torch.all(tokens[:, :10] < 8)
    # The delimiter sits after the 10 symbols and gap - 1 blanks, nowhere else.
    assert torch.all(tokens[:, gap + 9] == delimiter)
    assert int((tokens == delimiter).sum()) == batch_size
    assert torch.all(tokens[:, 10 : gap + 9] == blank)
    assert torch.all(tokens[:, gap + 10 :] == blank)
    assert torch.equal(batch.targets[:, -10:], tokens[:, :10])
    assert torch.all(batch.targets[:, :-10] == blank)
    assert torch.all(batch.mask[:, -10:]) and not torch.any(batch.mask[:, :-10])
    assert int(batch.mask.sum()) == 10 * batch_size


@FAST
@given(
    gap=st.integers(1, 40),
    n_symbols=st.integers(2, 12),
    n_recall=st.integers(1, 12),
    seed=SEEDS,
)
def test_copy_structure_other_sizes(gap: int, n_symbols: int, n_recall: int, seed: int) -> None:
    task = make_task("copy", gap=gap, n_symbols=n_symbols, n_recall=n_recall)
    batch = task.sample(4, generator(seed))
    tokens = tokens_of(batch)
    assert tokens.shape == (4, gap + 2 * n_recall)
    assert batch.inputs.shape[-1] == n_symbols + 2 and task.output_size == n_symbols + 1
    assert torch.all(tokens[:, n_recall + gap - 1] == n_symbols + 1)
    assert torch.equal(batch.targets[:, -n_recall:], tokens[:, :n_recall])
    assert int(batch.mask.sum()) == 4 * n_recall
    assert task.chance.loss == pytest.approx(n_recall * math.log(n_symbols) / (gap + 2 * n_recall))


@FAST
@given(gap=st.integers(2, 300), seed=SEEDS, batch_size=st.integers(1, 8))
def test_adding_structure(gap: int, seed: int, batch_size: int) -> None:
    task = make_task("adding", gap=gap)
    batch = task.sample(batch_size, generator(seed))
    assert task.seq_len == gap and task.gap == gap
    assert (task.input_size, task.output_size, task.regression) == (2, 1, True)
    assert batch.inputs.shape == (batch_size, gap, 2) and batch.inputs.dtype == torch.float32
    assert batch.targets.shape == (batch_size, gap) and batch.targets.dtype == torch.float32
    assert batch.mask.shape == (batch_size, gap) and batch.mask.dtype == torch.bool
    values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    assert torch.all((values >= 0) & (values < 1))
    assert torch.all((markers == 0) | (markers == 1))
    half = gap // 2
    assert torch.all(markers[:, :half].sum(dim=1) == 1)
    assert torch.all(markers[:, half:].sum(dim=1) == 1)
    # Only two terms are non-zero, so the float32 sum is exactly the rounded a + b.
    assert torch.equal(batch.targets[:, -1], (values * markers).sum(dim=1))
    assert torch.all(batch.targets[:, :-1] == 0)
    assert torch.all(batch.mask[:, -1]) and not torch.any(batch.mask[:, :-1])


@FAST
@given(
    gap=st.integers(1, 300),
    vocab=st.integers(2, 12),
    distractor_vocab=st.integers(1, 12),
    filler=st.sampled_from(["blank", "noise"]),
    seed=SEEDS,
    batch_size=st.integers(1, 8),
)
def test_delayed_recall_structure(
    gap: int, vocab: int, distractor_vocab: int, filler: str, seed: int, batch_size: int
) -> None:
    task = make_task(
        "delayed_recall", gap=gap, vocab=vocab, filler=filler, distractor_vocab=distractor_vocab
    )
    batch = task.sample(batch_size, generator(seed))
    length, width = gap + 2, vocab + distractor_vocab + 2
    assert task.seq_len == length and task.gap == gap
    assert (task.input_size, task.output_size, task.regression) == (width, vocab, False)
    assert batch.inputs.shape == (batch_size, length, width)
    assert batch.inputs.dtype == torch.float32
    assert batch.targets.shape == (batch_size, length) and batch.targets.dtype == torch.int64
    assert batch.mask.shape == (batch_size, length) and batch.mask.dtype == torch.bool
    tokens = tokens_of(batch)
    blank, cue = vocab + distractor_vocab, vocab + distractor_vocab + 1
    assert torch.all(tokens[:, 0] < vocab)
    assert torch.equal(batch.targets[:, gap + 1], tokens[:, 0])
    assert torch.all(tokens[:, gap + 1] == cue)
    assert int((tokens == cue).sum()) == batch_size
    filler_tokens = tokens[:, 1 : gap + 1]
    if filler == "noise":
        assert torch.all((filler_tokens >= vocab) & (filler_tokens < vocab + distractor_vocab))
    else:
        assert torch.all(filler_tokens == blank)
    assert torch.all(batch.targets[:, : gap + 1] == 0)
    assert torch.all(batch.mask[:, gap + 1]) and int(batch.mask.sum()) == batch_size


def test_noise_filler_covers_the_distractor_vocabulary() -> None:
    task = make_task("delayed_recall", gap=50, vocab=4, filler="noise", distractor_vocab=5)
    tokens = tokens_of(task.sample(200, generator(0)))
    counts = torch.bincount(tokens[:, 1:-1].flatten(), minlength=task.input_size)
    # 10,000 draws over 5 distractors: each share within 0.2 +- 0.02 (5 SE).
    shares = counts[4:9].double() / counts.sum()
    assert torch.all((shares - 0.2).abs() < 0.02)
    assert counts[:4].sum() == 0 and counts[9:].sum() == 0


def gap_range(data: st.DataObject, low: int, gap: int, variable: bool) -> int | None:
    return data.draw(st.integers(low, gap)) if variable else None


def check_shapes(task: Task, batch: Batch, batch_size: int, gap_min: int | None) -> None:
    assert batch.inputs.shape == (batch_size, task.seq_len, task.input_size)
    assert batch.targets.shape == batch.mask.shape == (batch_size, task.seq_len)
    assert batch.gaps is not None and batch.gaps.shape == (batch_size,)
    low = task.gap if gap_min is None else gap_min
    assert torch.all((batch.gaps >= low) & (batch.gaps <= task.gap))
    # the scored positions are the same for every sequence, whatever its gap
    assert torch.all(batch.mask == batch.mask[0])


@FAST
@given(gap=st.integers(10, 200), n_relevant=st.sampled_from([2, 3]), variable=st.booleans(),
       seed=SEEDS, batch_size=st.integers(1, 8), data=st.data())
def test_temporal_order_structure(gap: int, n_relevant: int, variable: bool, seed: int,
                                  batch_size: int, data: st.DataObject) -> None:
    gap_min = gap_range(data, 10, gap, variable)
    task = make_task("temporal_order", gap=gap, n_relevant=n_relevant, gap_min=gap_min)
    batch = task.sample(batch_size, generator(seed))
    assert task.seq_len == gap and (task.input_size, task.output_size) == (7, 2**n_relevant)
    check_shapes(task, batch, batch_size, gap_min)
    tokens = tokens_of(batch)
    for row in range(batch_size):
        n = int(batch.gaps[row])
        assert torch.all(tokens[row, : gap - n] == 6)  # blank padding before the sequence
        sequence = tokens[row, gap - n :]
        assert torch.all(sequence < 6)
        relevant = (sequence < 2).nonzero().flatten().tolist()
        assert len(relevant) == n_relevant
        for position, start in zip(relevant, WINDOW_STARTS[n_relevant], strict=True):
            assert n * start // 100 <= position < n * start // 100 + n // 10
        label = sum(int(sequence[p]) << k for k, p in enumerate(relevant))
        assert int(batch.targets[row, -1]) == label
    assert torch.all(batch.targets[:, :-1] == 0)
    assert torch.all(batch.mask[:, -1]) and int(batch.mask.sum()) == batch_size


@FAST
@given(gap=st.integers(1, 150), vocab=st.integers(2, 10), n_tokens=st.integers(1, 8),
       variable=st.booleans(), seed=SEEDS, batch_size=st.integers(1, 8), data=st.data())
def test_selective_copy_structure(gap: int, vocab: int, n_tokens: int, variable: bool, seed: int,
                                  batch_size: int, data: st.DataObject) -> None:
    gap_min = gap_range(data, 1, gap, variable)
    task = make_task("selective_copy", gap=gap, vocab=vocab, n_tokens=n_tokens, gap_min=gap_min)
    batch = task.sample(batch_size, generator(seed))
    region, blank, cue = gap + n_tokens, vocab, vocab + 1
    assert task.seq_len == gap + 2 * n_tokens
    assert (task.input_size, task.output_size) == (vocab + 2, vocab)
    check_shapes(task, batch, batch_size, gap_min)
    tokens = tokens_of(batch)
    for row in range(batch_size):
        pad = gap - int(batch.gaps[row])
        assert torch.all(tokens[row, :pad] == blank)
        window = tokens[row, pad:region]
        symbols = window[window != blank]
        assert len(symbols) == n_tokens and torch.all(symbols < vocab)
        assert torch.equal(batch.targets[row, region:], symbols)
    assert torch.all(tokens[:, region:] == cue)
    assert torch.all(batch.targets[:, :region] == 0)
    assert torch.all(batch.mask[:, region:]) and not torch.any(batch.mask[:, :region])


@FAST
@given(gap=st.integers(1, 100), half=st.integers(2, 8), variable=st.booleans(), seed=SEEDS,
       batch_size=st.integers(1, 8), data=st.data())
def test_associative_recall_structure(gap: int, half: int, variable: bool, seed: int,
                                      batch_size: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, half))
    gap_min = gap_range(data, 1, gap, variable)
    vocab = 2 * half
    task = make_task("associative_recall", gap=gap, vocab=vocab, n_pairs=k, gap_min=gap_min)
    batch = task.sample(batch_size, generator(seed))
    length = 3 * k + gap
    assert task.seq_len == length
    assert (task.input_size, task.output_size) == (vocab + 1, half)
    check_shapes(task, batch, batch_size, gap_min)
    tokens = tokens_of(batch)
    for row in range(batch_size):
        pad = gap - int(batch.gaps[row])
        assert torch.all(tokens[row, :pad] == vocab)
        keys, values = tokens[row, pad : pad + 2 * k : 2], tokens[row, pad + 1 : pad + 2 * k : 2]
        assert torch.all(keys < half) and len(set(keys.tolist())) == k
        assert torch.all((values >= half) & (values < vocab)) and len(set(values.tolist())) == k
        assert torch.all(tokens[row, pad + 2 * k : length - k] == vocab)
        queries = tokens[row, length - k :]
        assert sorted(queries.tolist()) == sorted(keys.tolist())
        for j, query in enumerate(queries.tolist()):
            answer = int(values[keys == query]) - half
            assert int(batch.targets[row, length - k + j]) == answer
    assert torch.all(batch.targets[:, : length - k] == 0)
    assert torch.all(batch.mask[:, length - k :]) and not torch.any(batch.mask[:, : length - k])


@FAST
@given(gap=st.integers(1, 200), seed=SEEDS, batch_size=st.integers(1, 8), data=st.data())
def test_copy_and_delayed_recall_with_variable_gaps(gap: int, seed: int, batch_size: int,
                                                    data: st.DataObject) -> None:
    gap_min = data.draw(st.integers(1, gap))
    copy = make_task("copy", gap=gap, gap_min=gap_min)
    batch = copy.sample(batch_size, generator(seed))
    check_shapes(copy, batch, batch_size, gap_min)
    tokens = tokens_of(batch)
    for row in range(batch_size):
        pad = gap - int(batch.gaps[row])
        assert torch.all(tokens[row, :pad] == 8)
        assert torch.all(tokens[row, pad : pad + 10] < 8)
        assert torch.equal(batch.targets[row, -10:], tokens[row, pad : pad + 10])
        assert torch.all(tokens[row, pad + 10 : gap + 9] == 8)
    assert torch.all(tokens[:, gap + 9] == 9) and torch.all(tokens[:, gap + 10 :] == 8)
    recall = make_task("delayed_recall", gap=gap, gap_min=gap_min, filler="noise")
    batch = recall.sample(batch_size, generator(seed))
    check_shapes(recall, batch, batch_size, gap_min)
    tokens = tokens_of(batch)
    for row in range(batch_size):
        pad = gap - int(batch.gaps[row])
        assert torch.all(tokens[row, :pad] == 16)  # blank, not noise
        assert tokens[row, pad] < 8 and int(batch.targets[row, -1]) == int(tokens[row, pad])
        assert torch.all((tokens[row, pad + 1 : -1] >= 8) & (tokens[row, pad + 1 : -1] < 16))
    assert torch.all(tokens[:, -1] == 17)


@FAST
@given(gap=st.integers(2, 200), variant=st.sampled_from(["sum", "mean"]), seed=SEEDS,
       batch_size=st.integers(1, 8), data=st.data())
def test_adding_with_variable_gaps(gap: int, variant: str, seed: int, batch_size: int,
                                   data: st.DataObject) -> None:
    gap_min = data.draw(st.integers(2, gap))
    task = make_task("adding", gap=gap, variant=variant, gap_min=gap_min)
    batch = task.sample(batch_size, generator(seed))
    check_shapes(task, batch, batch_size, gap_min)
    values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    for row in range(batch_size):
        n = int(batch.gaps[row])
        pad, half = gap - n, n // 2
        assert torch.all(values[row, :pad] == 0) and torch.all(markers[row, :pad] == 0)
        real = values[row, pad:]
        assert torch.all((real >= 0) & (real < 1))
        assert markers[row, pad : pad + half].sum() == 1 and markers[row, pad + half :].sum() == 1
    total = (values * markers).sum(dim=1)
    expected = total / 2 if variant == "mean" else total
    assert torch.equal(batch.targets[:, -1], expected)
    assert torch.all(batch.targets[:, :-1] == 0) and torch.all(batch.mask[:, -1])


@FAST
@given(gap=st.integers(20, 300), seed=SEEDS, batch_size=st.integers(1, 8))
def test_adding_hochreiter1997_structure(gap: int, seed: int, batch_size: int) -> None:
    task = make_task("adding", gap=gap, variant="hochreiter1997")
    batch = task.sample(batch_size, generator(seed))
    assert task.seq_len == gap + gap // 10 and (task.gap_min, task.gap_max) == (gap, task.seq_len)
    values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    for row in range(batch_size):
        n = int(batch.gaps[row])
        assert gap <= n <= gap + gap // 10
        pad = task.seq_len - n
        assert torch.all(values[row, :pad] == 0) and torch.all(markers[row, :pad] == 0)
        assert torch.all((values[row, pad:] >= -1) & (values[row, pad:] <= 1))
        sequence = markers[row, pad:]
        marked = (sequence == 1).nonzero().flatten().tolist()
        assert len(marked) == 2 and marked[0] < 10 and marked[1] < gap // 2
        assert sequence[-1] == -1 and sequence[0] in (-1, 1)
        others = torch.ones(n, dtype=torch.bool)
        others[[0, n - 1, *marked]] = False
        assert torch.all(sequence[others] == 0)
    expected = 0.5 + (values * (markers == 1)).sum(dim=1) / 4
    torch.testing.assert_close(batch.targets[:, -1], expected)
    assert torch.all(batch.mask[:, -1]) and int(batch.mask.sum()) == batch_size


def test_hochreiter1997_first_step_rule() -> None:
    """X1 is among the first ten steps: on the first step (1 in 10) its value is 0."""
    task = make_task("adding", gap=40, variant="hochreiter1997")
    batch = task.sample(20_000, generator(3))
    values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    start = task.seq_len - batch.gaps
    rows = torch.arange(20_000)
    first_marked = markers[rows, start] == 1
    # X1 on the first step (p = 1/10) or X2 there (p = 9/10 * 1/19): about 0.147
    share = first_marked.double().mean().item()
    assert abs(share - (0.1 + 0.9 / 19)) < 5 * math.sqrt(0.147 * 0.853 / 20_000)
    zeroed = first_marked & (values[rows, start] == 0)
    assert abs(zeroed.double().mean().item() - 0.1) < 5 * math.sqrt(0.09 / 20_000)


@pytest.mark.parametrize("build", [
    lambda: make_task("copy", gap=14, gap_min=5),
    lambda: make_task("temporal_order", gap=19, gap_min=10),
    lambda: make_task("associative_recall", gap=14, gap_min=5),
])
def test_variable_gaps_are_uniform(build: object) -> None:
    task = build()  # type: ignore[operator]
    gaps = task.sample(20_000, generator(11)).gaps
    counts = torch.bincount(gaps - task.gap_min, minlength=10).double()
    assert len(counts) == 10  # exactly the gaps gap_min .. gap
    shares = counts / counts.sum()
    assert torch.all((shares - 0.1).abs() < 5 * math.sqrt(0.09 / 20_000))


def test_randint_rows() -> None:
    low = torch.tensor([0, 5, 3, 100])
    high = torch.tensor([1, 9, 4, 200])
    draws = torch.stack([randint_rows(low, high, generator(s)) for s in range(2000)])
    assert torch.all(draws >= low) and torch.all(draws < high)
    assert set(draws[:, 1].tolist()) == {5, 6, 7, 8}
    assert torch.all(draws[:, 0] == 0) and torch.all(draws[:, 2] == 3)
    # one shared range: exactly torch.randint's numbers
    same = randint_rows(torch.full((6,), 4), torch.full((6,), 9), generator(5))
    assert torch.equal(same, 4 + torch.randint(5, (6,), generator=generator(5)))
    with pytest.raises(ValueError, match="high > low"):
        randint_rows(torch.tensor([3]), torch.tensor([3]), generator(0))


# --- sequential digits ------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_disjoint() -> None:
    _, labels = load_digits_tensors()
    train, test = stratified_split(labels, 0)
    assert (len(train), len(test)) == (1438, 359)
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(1797))
    for digit in range(10):
        members = int((labels == digit).sum())
        assert int((labels[test] == digit).sum()) == round(0.2 * members)
    assert torch.equal(stratified_split(labels, 0)[1], test)
    assert not torch.equal(stratified_split(labels, 1)[1], test)


def test_digits_train_and_eval_samples_come_from_their_split() -> None:
    task = SequentialDigitsConfig().build()
    for split, indices in task.split_indices.items():
        labels = {task.pixels[i].numpy().tobytes(): int(task.labels[i]) for i in indices}
        batch = task.sample(5 * len(indices), generator(0), split)
        drawn = [row.numpy().tobytes() for row in batch.inputs.squeeze(-1)]
        # every sampled image is an image of that split, with its label
        assert all(image in labels for image in drawn)
        assert [labels[image] for image in drawn] == batch.targets[:, -1].tolist()
        # 5 draws per image cover all but ~e^-5 of the split
        assert len(set(drawn)) > 0.97 * len(labels)
    assert torch.all(task.pixels * 16 == (task.pixels * 16).round())
    assert float(task.pixels.min()) == 0 and float(task.pixels.max()) == 1


def test_permuted_digits_use_one_fixed_permutation() -> None:
    plain = SequentialDigitsConfig().build()
    permuted = SequentialDigitsConfig(permuted=True).build()
    again = SequentialDigitsConfig(permuted=True).build()
    other = SequentialDigitsConfig(permuted=True, permutation_seed=1).build()
    assert torch.equal(permuted.order, again.order)
    assert not torch.equal(permuted.order, torch.arange(64))
    assert not torch.equal(permuted.order, other.order)
    assert sorted(permuted.order.tolist()) == list(range(64))
    a, b = plain.sample(16, generator(2)), permuted.sample(16, generator(2))
    assert torch.equal(b.inputs[:, :, 0], a.inputs[:, permuted.order, 0])
    assert torch.equal(a.targets, b.targets)


# --- determinism ----------------------------------------------------------------------------


ALL_TASKS = [
    pytest.param(lambda: make_task("copy", gap=30), id="copy"),
    pytest.param(lambda: make_task("adding", gap=30), id="adding"),
    pytest.param(lambda: make_task("delayed_recall", gap=30), id="delayed_recall-blank"),
    pytest.param(lambda: make_task("delayed_recall", gap=30, filler="noise"),
                 id="delayed_recall-noise"),
    pytest.param(lambda: make_task("adding", gap=30, variant="mean"), id="adding-mean"),
    pytest.param(lambda: make_task("adding", gap=30, variant="hochreiter1997"),
                 id="adding-hochreiter1997"),
    pytest.param(lambda: make_task("temporal_order", gap=30), id="temporal_order"),
    pytest.param(lambda: make_task("temporal_order", gap=30, n_relevant=3), id="temporal_order3"),
    pytest.param(lambda: make_task("selective_copy", gap=30), id="selective_copy"),
    pytest.param(lambda: make_task("associative_recall", gap=30), id="associative_recall"),
    pytest.param(lambda: make_task("sequential_digits", gap=64), id="sequential_digits"),
    pytest.param(lambda: make_task("sequential_digits", gap=64, permuted=True),
                 id="sequential_digits-permuted"),
    # variable gaps: every sequence draws its gap from [gap_min, gap]
    pytest.param(lambda: make_task("copy", gap=30, gap_min=5), id="copy-variable"),
    pytest.param(lambda: make_task("adding", gap=30, gap_min=2), id="adding-variable"),
    pytest.param(lambda: make_task("delayed_recall", gap=30, filler="noise", gap_min=1),
                 id="delayed_recall-variable"),
    pytest.param(lambda: make_task("temporal_order", gap=30, gap_min=10),
                 id="temporal_order-variable"),
    pytest.param(lambda: make_task("selective_copy", gap=30, gap_min=1),
                 id="selective_copy-variable"),
    pytest.param(lambda: make_task("associative_recall", gap=30, gap_min=1),
                 id="associative_recall-variable"),
]


def assert_same(a: Batch, b: Batch) -> None:
    assert torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.targets, b.targets)
    assert torch.equal(a.mask, b.mask)


@pytest.mark.parametrize("build", ALL_TASKS)
def test_same_seed_same_batch(build: Callable[[], Task]) -> None:
    task = build()
    assert_same(task.sample(32, generator(7)), task.sample(32, generator(7)))
    # A fresh task object generates the same data too: no hidden state in the task.
    assert_same(task.sample(32, generator(7)), build().sample(32, generator(7)))


@pytest.mark.parametrize("build", ALL_TASKS)
def test_different_seed_different_batch(build: Callable[[], Task]) -> None:
    task = build()
    a, b = task.sample(32, generator(7)), task.sample(32, generator(8))
    assert not torch.equal(a.inputs, b.inputs)
    # Successive batches from one generator differ as well.
    rng = generator(7)
    assert not torch.equal(task.sample(32, rng).inputs, task.sample(32, rng).inputs)


@pytest.mark.parametrize("build", ALL_TASKS)
def test_generation_ignores_and_spares_global_rng(build: Callable[[], Task]) -> None:
    task = build()
    torch.manual_seed(0)
    reference = task.sample(32, generator(7))
    torch.manual_seed(999)
    torch.rand(100)
    state = torch.get_rng_state()
    assert_same(task.sample(32, generator(7)), reference)
    assert torch.equal(torch.get_rng_state(), state)


# --- the data of each seed, pinned ------------------------------------------------------------

# sha256 (first 16 hex digits) of a 16-sequence batch of each split from seed 3: inputs,
# targets, mask and gaps, as generated before the task configs moved beside their generators.
# How a task is defined must not change the data a seed gives.
PINNED_DATA = [
    ("copy", {"gap": 30}, "ae4abc9f8d88ea75"),
    ("copy", {"gap": 30, "gap_min": 5}, "262edad8ba2c6ed2"),
    ("adding", {"gap": 30}, "b08df1a4bdab6f7a"),
    ("adding", {"gap": 30, "variant": "mean", "gap_min": 2}, "f8f596443ee96d98"),
    ("adding", {"gap": 30, "variant": "hochreiter1997"}, "e508709c00fc9beb"),
    ("delayed_recall", {"gap": 30}, "c7a8e8a59901bf68"),
    ("delayed_recall", {"gap": 30, "filler": "noise", "gap_min": 1}, "446302acf356503a"),
    ("temporal_order", {"gap": 30, "n_relevant": 3, "gap_min": 10}, "e2924386671674f9"),
    ("selective_copy", {"gap": 30, "gap_min": 1}, "994b8fbaa03dbf32"),
    ("associative_recall", {"gap": 30, "gap_min": 1}, "6e6e5bfd8665db02"),
    ("sequential_digits", {"gap": 64, "permuted": True}, "9561a6e89314c28d"),
]


@pytest.mark.parametrize(("name", "params", "digest"), PINNED_DATA,
                         ids=[f"{name}-{digest[:4]}" for name, _, digest in PINNED_DATA])
def test_each_seed_gives_the_data_it_always_gave(name: str, params: dict, digest: str) -> None:
    task = make_task(name, **params)
    sha = hashlib.sha256()
    for split in ("train", "eval"):
        batch = task.sample(16, generator(3), split)
        for tensor in (batch.inputs, batch.targets, batch.mask, batch.gaps):
            sha.update(tensor.contiguous().numpy().tobytes())
    assert sha.hexdigest()[:16] == digest


# --- loss and accuracy ----------------------------------------------------------------------


def perfect_outputs(task: Task, batch: Batch) -> torch.Tensor:
    if task.regression:
        return batch.targets.unsqueeze(-1).clone()
    return 50.0 * torch.nn.functional.one_hot(batch.targets, task.output_size).float()


@pytest.mark.parametrize("build", ALL_TASKS)
def test_perfect_outputs_score_perfectly(build: Callable[[], Task]) -> None:
    task = build()
    batch = task.sample(64, generator(3))
    outputs = perfect_outputs(task, batch)
    assert task.loss(outputs, batch).item() < 1e-6
    assert task.accuracy(outputs, batch).item() == 1.0


@pytest.mark.parametrize("build", ALL_TASKS)
def test_loss_gradient_reaches_exactly_the_published_positions(build: Callable[[], Task]) -> None:
    task = build()
    batch = task.sample(16, generator(3))
    outputs = torch.zeros(16, task.seq_len, task.output_size, requires_grad=True)
    loss = task.loss(outputs, batch)
    assert loss.ndim == 0
    loss.backward()
    touched = outputs.grad.abs().sum(dim=-1) > 0
    if isinstance(task, CopyTask):
        # Published copy loss: cross-entropy over every position, not only the recall window.
        assert torch.all(touched)
    else:
        assert torch.equal(touched, batch.mask)


@pytest.mark.parametrize("build", ALL_TASKS)
def test_accuracy_ignores_unscored_positions(build: Callable[[], Task]) -> None:
    task = build()
    batch = task.sample(64, generator(3))
    outputs = perfect_outputs(task, batch)
    # Garbage outside the mask must not change the accuracy.
    outputs[~batch.mask] = -outputs[~batch.mask] + 7.0
    assert task.accuracy(outputs, batch).item() == 1.0
    # Making the first scored item of every sequence wrong costs exactly that share.
    first = batch.mask.int().argmax(dim=1)
    rows = torch.arange(64)
    if task.regression:
        outputs[rows, first, 0] += 0.05
    else:
        outputs[rows, first] = outputs[rows, first].roll(1, dims=-1)
    expected = 1.0 - 64 / int(batch.mask.sum())
    assert task.accuracy(outputs, batch).item() == pytest.approx(expected)


def test_adding_accuracy_threshold_is_strict() -> None:
    task = make_task("adding", gap=4)
    batch = task.sample(4, generator(0))
    offsets = torch.tensor([0.0, 0.039, 0.041, -0.5])
    outputs = batch.targets.clone().unsqueeze(-1)
    outputs[:, -1, 0] += offsets
    assert task.accuracy(outputs, batch).item() == pytest.approx(0.5)
    assert task.loss(outputs, batch).item() == pytest.approx((offsets**2).mean().item(), rel=1e-4)


@pytest.mark.parametrize("build", ALL_TASKS)
def test_wrong_output_shape_is_rejected(build: Callable[[], Task]) -> None:
    task = build()
    batch = task.sample(4, generator(0))
    with pytest.raises(ValueError, match="shape"):
        task.loss(torch.zeros(4, task.seq_len), batch)
    with pytest.raises(ValueError, match="shape"):
        task.accuracy(torch.zeros(4, task.seq_len, task.output_size + 1), batch)


SMALLEST_GAP = {"temporal_order": 10, "sequential_digits": 64}  # others: 7 is valid


@pytest.mark.parametrize("name", sorted(TASKS))
def test_scored_loss_is_the_loss_at_the_masked_positions(name: str) -> None:
    task = make_task(name, gap=max(7, SMALLEST_GAP.get(name, 7)))
    batch = task.sample(16, torch.Generator().manual_seed(4))
    outputs = torch.randn(*batch.targets.shape, task.output_size, generator=torch.Generator())
    scored = task.scored_loss(outputs, batch)
    if task.regression:
        expected = ((outputs.squeeze(-1) - batch.targets)[batch.mask] ** 2).mean()
    else:
        log_probs = outputs.log_softmax(-1).gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)
        expected = -log_probs[batch.mask].mean()
    torch.testing.assert_close(scored, expected)
    if name != "copy":  # only copy's published loss also covers unscored positions
        torch.testing.assert_close(task.loss(outputs, batch), scored)
    else:
        assert not torch.isclose(task.loss(outputs, batch), scored)


def test_bad_sample_arguments() -> None:
    task = make_task("copy", gap=5)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(0, generator(0))
    with pytest.raises(ValueError, match="generator"):
        task.sample(4, 0)  # type: ignore[arg-type]


def test_batch_to_device_keeps_contents() -> None:
    batch = make_task("copy", gap=5).sample(4, generator(0))
    moved = batch.to("cpu")
    assert isinstance(moved, Batch)
    assert_same(moved, batch)


