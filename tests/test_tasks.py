"""Tests of the synthetic tasks: chance levels measured on generated data, sequence structure,
determinism of the generator stream, loss/accuracy semantics and parameter validation."""

import hashlib
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import TASKS, AddingTask, Batch, CopyTask, DelayedRecallTask, Task, make_task

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
# Relative tolerance 1%. The sample sizes make 1% at least ~4 standard errors of the
# accuracy estimates, the noisiest figures (binomial, p = 1/8: 1.2e6 scored positions give
# SE 3.0e-4 against a 1% band of 1.25e-3; adding, p = 0.0784: 2.4e6 sequences give SE 1.7e-4
# against 7.8e-4; adding MSE has per-sequence SD sqrt(7/180) = 0.197, SE 1.3e-4 against
# 1.7e-3). The cross-entropies are far tighter because -log p_hat is nearly constant.

REL = 0.01


def measure_memoryless(
    task: Task, n_fit: int, n_loss: int, n_accuracy: int, chunk: int
) -> tuple[float, float]:
    """Loss and accuracy of the empirical best memoryless classifier, via task.loss/accuracy.

    The per-position marginal of the targets is estimated on `n_fit` sequences and scored on
    fresh ones (loss on the first `n_loss`, accuracy on `n_accuracy`), so the figures are not
    flattered by fitting and scoring the same data. Chunks keep memory bounded; all chunks
    have the same size and the same number of scored positions, so the mean over chunks is
    the mean over all sequences.
    """
    assert n_fit % chunk == 0 and n_loss % chunk == 0 and n_accuracy % chunk == 0
    counts = torch.zeros(task.seq_len, task.output_size, dtype=torch.float64)
    fit = generator(1234)
    for _ in range(n_fit // chunk):
        targets = task.sample(chunk, fit).targets
        counts += torch.nn.functional.one_hot(targets, task.output_size).sum(dim=0)
    marginal = counts / counts.sum(dim=-1, keepdim=True)
    # log(0) would be -inf; a floor of 1e-12 changes the loss by < 1e-10 nats.
    log_marginal = marginal.clamp_min(1e-12).log().to(torch.float32)
    outputs = log_marginal.expand(chunk, -1, -1)
    losses, accuracies = [], []
    score = generator(5678)
    for i in range(max(n_loss, n_accuracy) // chunk):
        batch = task.sample(chunk, score)
        if i < n_loss // chunk:
            losses.append(task.loss(outputs, batch).item())
        if i < n_accuracy // chunk:
            accuracies.append(task.accuracy(outputs, batch).item())
    return sum(losses) / len(losses), sum(accuracies) / len(accuracies)


@pytest.mark.parametrize(("gap", "published_ce"), [(100, 0.1733), (200, 0.0945)])
def test_copy_chance_measured(gap: int, published_ce: float) -> None:
    task = CopyTask(gap=gap)
    # The analytic figure matches the numbers quoted by Arjovsky et al. (2016).
    assert task.chance.loss == pytest.approx(published_ce, abs=5e-5)
    # The loss is nearly deterministic per sequence (SE ~1e-6 at 20,000 sequences); the
    # accuracy is binomial and needs 120,000 sequences = 1.2e6 recall positions.
    loss, accuracy = measure_memoryless(
        task, n_fit=20_000, n_loss=20_000, n_accuracy=120_000, chunk=10_000
    )
    assert loss == pytest.approx(published_ce, rel=REL)
    assert loss == pytest.approx(task.chance.loss, rel=REL)
    assert accuracy == pytest.approx(task.chance.accuracy, rel=REL)
    assert accuracy == pytest.approx(1 / 8, rel=REL)


def test_delayed_recall_chance_measured() -> None:
    task = DelayedRecallTask(gap=3, filler="noise")
    loss, accuracy = measure_memoryless(
        task, n_fit=200_000, n_loss=200_000, n_accuracy=1_200_000, chunk=200_000
    )
    assert loss == pytest.approx(math.log(8), rel=REL)
    assert loss == pytest.approx(task.chance.loss, rel=REL)
    assert accuracy == pytest.approx(1 / 8, rel=REL)
    assert accuracy == pytest.approx(task.chance.accuracy, rel=REL)


def test_adding_chance_measured() -> None:
    task = AddingTask(gap=10)
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


# --- structure ------------------------------------------------------------------------------


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
    task = CopyTask(gap=gap, n_symbols=n_symbols, n_recall=n_recall)
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
    task = DelayedRecallTask(gap=50, vocab=4, filler="noise", distractor_vocab=5)
    tokens = tokens_of(task.sample(200, generator(0)))
    counts = torch.bincount(tokens[:, 1:-1].flatten(), minlength=task.input_size)
    # 10,000 draws over 5 distractors: each share within 0.2 +- 0.02 (5 SE).
    shares = counts[4:9].double() / counts.sum()
    assert torch.all((shares - 0.2).abs() < 0.02)
    assert counts[:4].sum() == 0 and counts[9:].sum() == 0


# --- determinism ----------------------------------------------------------------------------

ALL_TASKS = [
    pytest.param(lambda: CopyTask(gap=30), id="copy"),
    pytest.param(lambda: AddingTask(gap=30), id="adding"),
    pytest.param(lambda: DelayedRecallTask(gap=30), id="delayed_recall-blank"),
    pytest.param(lambda: DelayedRecallTask(gap=30, filler="noise"), id="delayed_recall-noise"),
    pytest.param(lambda: AddingTask(gap=30, variant="mean"), id="adding-mean"),
    pytest.param(lambda: AddingTask(gap=30, variant="hochreiter1997"), id="adding-hochreiter1997"),
    pytest.param(lambda: make_task("temporal_order", gap=30), id="temporal_order"),
    pytest.param(lambda: make_task("temporal_order", gap=30, n_relevant=3), id="temporal_order3"),
    pytest.param(lambda: make_task("selective_copy", gap=30), id="selective_copy"),
    pytest.param(lambda: make_task("associative_recall", gap=30), id="associative_recall"),
    pytest.param(lambda: make_task("sequential_digits", gap=64), id="sequential_digits"),
    pytest.param(lambda: make_task("sequential_digits", gap=64, permuted=True),
                 id="sequential_digits-permuted"),
    # variable gaps: every sequence draws its gap from [gap_min, gap]
    pytest.param(lambda: CopyTask(gap=30, gap_min=5), id="copy-variable"),
    pytest.param(lambda: AddingTask(gap=30, gap_min=2), id="adding-variable"),
    pytest.param(lambda: DelayedRecallTask(gap=30, filler="noise", gap_min=1),
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
    task = AddingTask(gap=4)
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


# --- registry and validation ----------------------------------------------------------------


SMALLEST_GAP = {"temporal_order": 10, "sequential_digits": 64}  # others: 5 is valid


def test_registry() -> None:
    assert set(TASKS) == {"copy", "adding", "delayed_recall", "temporal_order", "selective_copy",
                          "associative_recall", "sequential_digits"}
    for name, cls in TASKS.items():
        assert cls.name == name
        assert isinstance(make_task(name, gap=SMALLEST_GAP.get(name, 5)), cls)


def test_unknown_task_lists_names() -> None:
    with pytest.raises(ValueError, match="parity") as info:
        make_task("parity", gap=5)
    for name in TASKS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "params", "parameter"),
    [
        ("copy", {"gap": 0}, "gap"),
        ("copy", {"gap": -3}, "gap"),
        ("copy", {"gap": 2.5}, "gap"),
        ("copy", {"gap": True}, "gap"),
        ("copy", {"gap": 10, "n_symbols": 1}, "n_symbols"),
        ("copy", {"gap": 10, "n_recall": 0}, "n_recall"),
        ("copy", {"gap": 10, "vocab": 4}, "vocab"),
        ("copy", {}, "gap"),
        ("adding", {"gap": 1}, "gap"),
        ("adding", {"gap": 10, "filler": "noise"}, "filler"),
        ("delayed_recall", {"gap": 0}, "gap"),
        ("delayed_recall", {"gap": 5, "vocab": 1}, "vocab"),
        ("delayed_recall", {"gap": 5, "filler": "zeros"}, "filler"),
        ("delayed_recall", {"gap": 5, "distractor_vocab": 0}, "distractor_vocab"),
        ("delayed_recall", {"gap": 5, "seed": 1}, "seed"),
    ],
)
def test_bad_params_raise_naming_the_parameter(name: str, params: dict, parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        make_task(name, **params)


def test_bad_value_message_says_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"gap of task 'adding' must be an integer >= 2, got 1"):
        make_task("adding", gap=1)
    with pytest.raises(ValueError, match="'blank', 'noise'"):
        make_task("delayed_recall", gap=5, filler="zeros")
    with pytest.raises(ValueError, match="allowed: gap, n_symbols, n_recall"):
        make_task("copy", gap=5, symbols=8)


def test_bad_sample_arguments() -> None:
    task = CopyTask(gap=5)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(0, generator(0))
    with pytest.raises(ValueError, match="generator"):
        task.sample(4, 0)  # type: ignore[arg-type]


def test_str_enum_filler_is_accepted_as_plain_string() -> None:
    from enum import Enum

    # Mirrors a Hydra-schema enum; str() of such a member is "Filler.noise", not "noise".
    class Filler(str, Enum):  # noqa: UP042
        noise = "noise"

    task = make_task("delayed_recall", gap=5, filler=Filler.noise)
    assert task.filler == "noise" and type(task.filler) is str


def test_batch_to_device_keeps_contents() -> None:
    batch = CopyTask(gap=5).sample(4, generator(0))
    moved = batch.to("cpu")
    assert isinstance(moved, Batch)
    assert_same(moved, batch)


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
