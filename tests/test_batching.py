"""Whole-sweep batching: which jobs of a sweep share a batched job (harness/batching.py)."""

from __future__ import annotations

from harness.batching import Candidate, group_key, plan

PARAMS = {"task.name": "delayed_recall", "model.name": "rnn", "model.hidden_size": "64",
          "train.steps": "2000", "optim.name": "adam", "seed": "0", "optim.lr": "0.001",
          "optim.alpha": "0.99", "optim.eps": "1e-08", "optim.initial_accumulator": "0.0",
          "optim.lr_decay_every": "0", "optim.lr_decay_factor": "0.1",
          "clip.mode": "none", "clip.threshold": "1.0", "clip.nan_guard": "False",
          "model.activation": "tanh", "task.gap": "10", "model": "rnn", "clip": "none"}


def candidate(length: int = 12, limit: int = 8, **changes: str) -> Candidate:
    params = {**PARAMS, **{k.replace("__", "."): v for k, v in changes.items()}}
    return Candidate((f"x={len(changes)}",), group_key(params), length, limit)


def test_jobs_that_differ_only_in_member_keys_share_a_batch() -> None:
    same = [candidate(seed="1"), candidate(optim__lr="0.01"), candidate(clip__mode="norm"),
            candidate(model__activation="relu", model="rnn_relu"),
            candidate(clip__threshold="10", clip="norm")]
    assert plan([candidate(), *same]) == [[0, 1, 2, 3, 4, 5]]


def test_jobs_that_differ_in_anything_else_do_not() -> None:
    others = [candidate(model__hidden_size="32"), candidate(model__name="gru"),
              candidate(train__steps="500"), candidate(task__name="adding"),
              candidate(optim__name="sgd"), candidate(optim__alpha="0.9"),
              candidate(optim__eps="0.0"), candidate(optim__initial_accumulator="0.001"),
              candidate(optim__lr_decay_every="20100"), candidate(optim__lr_decay_factor="0.5")]
    assert plan([candidate(), *others]) == [[i] for i in range(len(others) + 1)]


def test_jobs_that_share_the_new_optimizer_settings_share_a_batch() -> None:
    authors = {"optim__name": "rmsprop", "optim__alpha": "0.9", "optim__eps": "0.0",
               "optim__initial_accumulator": "0.001", "optim__lr_decay_every": "100"}
    assert plan([candidate(**authors), candidate(seed="1", **authors),
                 candidate(optim__lr="0.003", **authors)]) == [[0, 1, 2]]


def test_the_guard_batches_and_backprop_clipping_shares_its_threshold() -> None:
    """The stacked clipper guards each member on its own: guarded jobs batch (with each
    other, not with unguarded ones: a setting, not a member key). The stacked cells apply one
    backprop clamp: such jobs batch only at the same threshold, never with other modes."""
    guarded = {"clip__nan_guard": "True"}
    assert plan([candidate(**guarded), candidate(seed="1", **guarded), candidate()]) == \
        [[0, 1], [2]]
    backprop = {"clip__mode": "backprop", "clip": "backprop"}
    assert plan([candidate(**backprop), candidate(seed="1", **backprop),
                 candidate(clip__threshold="10.0", **backprop), candidate(),
                 candidate(clip__mode="norm", seed="1")]) == [[0, 1], [3, 4], [2]]
    assert group_key({**PARAMS, "clip.mode": "backprop"}) != \
        group_key({**PARAMS, "clip.mode": "backprop", "clip.threshold": "10.0"})


def test_a_job_that_cannot_be_batched_runs_alone() -> None:
    alone = Candidate(("model=orth_rnn",), None, 12, 8)
    assert plan([candidate(), alone, candidate(seed="1")]) == [[0, 2], [1]]


def test_only_sequences_of_one_length_share_a_batch_and_batches_are_capped() -> None:
    """Left-padding would change a member's rounding: 10 and 12 do not share; at most `limit`
    members per batch."""
    lengths = [40, 10, 12, 41, 10, 40]
    assert plan([candidate(n, seed=str(i)) for i, n in enumerate(lengths)]) == \
        [[0, 5], [3], [1, 4], [2]]  # costliest first: 80, 41, 20, 12
    capped = [candidate(12, limit=4, seed=str(i)) for i in range(10)]
    assert plan(capped) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_the_costliest_batch_launches_first() -> None:
    """Members × longest sequence, largest first, so that on a few workers the sweep does not
    end waiting for one long job; ties keep the jobs' order. Without any batch, the jobs'
    own order."""
    gaps = [(12, "1"), (12, "2"), (80, "3"), (40, "4"), (40, "5"), (80, "6"), (12, "7")]
    jobs = [candidate(n, model__hidden_size=width, seed=str(i))
            for i, (n, width) in enumerate(gaps)]
    # widths 1..7 alone: no two jobs share a batch
    assert plan(jobs) == [[0], [1], [2], [3], [4], [5], [6]]
    shared = [candidate(n, seed=str(i)) for i, n in enumerate([12, 12, 80, 40, 40, 80, 12])]
    shared.append(candidate(100, model__hidden_size="32"))  # alone: 1 x 100
    assert plan(shared) == [[2, 5], [7], [3, 4], [0, 1, 6]]  # 160, 100, 80, 36
