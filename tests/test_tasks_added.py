"""Tests of the tasks added by issue #7: temporal order, selective copy, multi-query
associative recall, sequential digits, the adding variants and variable gaps.

Chance levels are measured on >= 10,000 generated sequences (accuracy within 5 binomial
standard errors of the analytic figure, cross-entropy and MSE within 1%); layouts are checked
exactly, per sequence, over many gaps and seeds (hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_tasks import FAST, SEEDS, generator, tokens_of

from harness import names
from harness.clipping import Clipper
from harness.loop import MemoryTracker, make_optimizer, train_loop
from harness.models import RecurrentModel
from harness.schema import TrainConfig
from tasks import AddingTask, Batch, Task, make_task
from tasks.base import randint_rows
from tasks.sequential_digits import SequentialDigitsTask, load_digits_tensors, stratified_split
from tasks.temporal_order import WINDOW_STARTS

# --- chance levels, measured -----------------------------------------------------------------


def memoryless(task: Task, n: int, split: str = "train",
               chunk: int = 10_000) -> tuple[float, float, int]:
    """Loss and accuracy of the empirical best memoryless classifier, and the items scored.

    The per-position marginal of the targets is fitted on n sequences and scored with the
    task's own loss and accuracy on n fresh ones. Every chunk has the same size and the same
    number of scored items, so the mean over chunks is the mean over all of them.
    """
    counts = torch.zeros(task.seq_len, task.output_size, dtype=torch.float64)
    fit = generator(1234)
    for _ in range(n // chunk):
        targets = task.sample(chunk, fit, split).targets
        counts += torch.nn.functional.one_hot(targets, task.output_size).sum(dim=0)
    marginal = counts / counts.sum(dim=-1, keepdim=True)
    outputs = marginal.clamp_min(1e-12).log().to(torch.float32).expand(chunk, -1, -1)
    losses, accuracies, items = [], [], 0
    score = generator(5678)
    for _ in range(n // chunk):
        batch = task.sample(chunk, score, split)
        losses.append(task.loss(outputs, batch).item())
        accuracies.append(task.accuracy(outputs, batch).item())
        items += int(batch.mask.sum())
    return sum(losses) / len(losses), sum(accuracies) / len(accuracies), items


def within_binomial(measured: float, p: float, items: int) -> bool:
    return abs(measured - p) < 5 * math.sqrt(p * (1 - p) / items)


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
    measured_loss, measured_accuracy, items = memoryless(task, n=100_000)
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
    task = AddingTask(gap=20, variant=variant, gap_min=gap_min)
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


# --- layouts, per sequence --------------------------------------------------------------------


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
    task = AddingTask(gap=gap, variant=variant, gap_min=gap_min)
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
    task = AddingTask(gap=gap, variant="hochreiter1997")
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
    task = AddingTask(gap=40, variant="hochreiter1997")
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


@pytest.mark.parametrize(("name", "params", "parameter"), [
    ("copy", {"gap": 10, "gap_min": 11}, "gap_min"),
    ("copy", {"gap": 10, "gap_min": 0}, "gap_min"),
    ("copy", {"gap": 10, "gap_max": 12}, "gap_max"),
    ("adding", {"gap": 10, "gap_min": 1}, "gap_min"),
    ("adding", {"gap": 10, "variant": "median"}, "variant"),
    ("adding", {"gap": 19, "variant": "hochreiter1997"}, "gap"),
    ("adding", {"gap": 30, "variant": "hochreiter1997", "gap_min": 25}, "gap_min"),
    ("temporal_order", {"gap": 9}, "gap"),
    ("temporal_order", {"gap": 20, "n_relevant": 4}, "n_relevant"),
    ("selective_copy", {"gap": 5, "n_tokens": 0}, "n_tokens"),
    ("selective_copy", {"gap": 5, "vocab": 1}, "vocab"),
    ("associative_recall", {"gap": 5, "vocab": 15}, "vocab"),
    ("associative_recall", {"gap": 5, "vocab": 8, "n_pairs": 5}, "n_pairs"),
    ("sequential_digits", {"gap": 100}, "gap"),
    ("sequential_digits", {"gap": 64, "gap_min": 10}, "gap_min"),
    ("sequential_digits", {"gap": 64, "permuted": "yes"}, "permuted"),
    ("sequential_digits", {"gap": 64, "split_seed": -1}, "split_seed"),
])
def test_bad_params_of_new_tasks_name_the_parameter(name: str, params: dict,
                                                    parameter: str) -> None:
    with pytest.raises(ValueError, match=f"^{parameter} of task"):
        make_task(name, **params)


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
    task = SequentialDigitsTask()
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
    plain = SequentialDigitsTask()
    permuted = SequentialDigitsTask(permuted=True)
    again = SequentialDigitsTask(permuted=True)
    other = SequentialDigitsTask(permuted=True, permutation_seed=1)
    assert torch.equal(permuted.order, again.order)
    assert not torch.equal(permuted.order, torch.arange(64))
    assert not torch.equal(permuted.order, other.order)
    assert sorted(permuted.order.tolist()) == list(range(64))
    a, b = plain.sample(16, generator(2)), permuted.sample(16, generator(2))
    assert torch.equal(b.inputs[:, :, 0], a.inputs[:, permuted.order, 0])
    assert torch.equal(a.targets, b.targets)


def test_digits_chance_measured_on_the_eval_split() -> None:
    task = SequentialDigitsTask()
    _, labels = load_digits_tensors()
    test_labels = labels[task.split_indices["eval"]]
    assert int(torch.bincount(test_labels).max()) == 37 and len(test_labels) == 359
    assert task.chance.accuracy == pytest.approx(37 / 359)
    assert task.chance.loss == pytest.approx(2.3025, abs=1e-4)
    assert task.chance.loss < math.log(10)
    loss, accuracy, items = memoryless(task, n=100_000, split="eval")
    assert loss == pytest.approx(task.chance.loss, rel=0.01)
    assert within_binomial(accuracy, task.chance.accuracy, items)


def test_the_loop_evaluates_digits_on_the_test_split() -> None:
    class Recording(SequentialDigitsTask):
        splits: list[str] = []

        def sample(self, batch_size: int, generator: torch.Generator,
                   split: str = "train") -> Batch:
            self.splits.append(split)
            return super().sample(batch_size, generator, split)

    task = Recording()
    model = RecurrentModel("gru", task.input_size, task.output_size, 8)
    cfg = TrainConfig(steps=3, eval_every=10, eval_batch_size=16, batch_size=4,
                      profile_batch_size=2)
    train_loop(task, model, make_optimizer(model, "adam", 1e-3), Clipper("none", 1.0), cfg,
               MemoryTracker(), seed=0)
    assert task.splits == ["eval", "train", "train", "train"]


# --- the loop's per-gap evaluation ----------------------------------------------------------


def test_final_evaluation_by_gap_adds_up_to_the_whole() -> None:
    task = make_task("copy", gap=12, gap_min=3)
    model = RecurrentModel("lstm", task.input_size, task.output_size, 8)
    cfg = TrainConfig(steps=5, eval_every=5, eval_batch_size=200, batch_size=8,
                      profile_batch_size=2)
    tracker = MemoryTracker()
    result = train_loop(task, model, make_optimizer(model, "adam", 1e-2), Clipper("none", 1.0),
                        cfg, tracker, seed=0)
    gaps = [row[0] for row in result.eval_by_gap]
    assert gaps == sorted(gaps) and set(gaps) <= set(range(3, 13)) and len(gaps) >= 8
    sequences = sum(row[1] for row in result.eval_by_gap)
    assert sequences == 200
    # every sequence has the same number of scored items and of loss terms, so the
    # sequence-weighted means per gap are the whole batch's figures
    loss = sum(row[1] * row[2] for row in result.eval_by_gap) / sequences
    accuracy = sum(row[1] * row[3] for row in result.eval_by_gap) / sequences
    assert loss == pytest.approx(result.final_eval_loss, rel=1e-5)
    assert accuracy == pytest.approx(result.final_eval_accuracy, rel=1e-5)
    fixed = make_task("copy", gap=12)
    model = RecurrentModel("lstm", fixed.input_size, fixed.output_size, 8)
    result = train_loop(fixed, model, make_optimizer(model, "adam", 1e-2), Clipper("none", 1.0),
                        cfg, MemoryTracker(), seed=0)
    assert result.eval_by_gap == []
    assert names.EVAL_BY_GAP_COLUMNS == ("gap", "sequences", "eval_loss", "eval_accuracy")
