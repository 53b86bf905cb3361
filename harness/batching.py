"""Whole-sweep batching: the jobs of a sweep grouped into batched jobs (`train.batch_members`).

With `train.batch_members=auto`, before a batch of jobs goes to the launcher
(`harness.sweeping.HarnessSweeper.launch_batch`, so the basic, Optuna and frontier sweepers
alike), jobs that may train as members of one stacked model (harness/batched.py) are grouped:

- **Who may share a batch.** Jobs whose configs are equal except in the keys of
  `MEMBER_KEYS` (seed, learning rate, clipping mode and threshold, the vanilla RNN's
  activation, init, forget bias, chrono, and the gap), on a cell the batched model computes
  (`batched.unbatchable`: rnn, lstm, gru; not orth_rnn, modReLU or bidirectional), without
  `batched_seeds`. Everything else (task and its knobs, hidden size, layers, every optimizer
  setting but the lr: kind, momentum, weight decay, RMSprop's alpha and initial accumulator,
  eps, the lr decay; the NaN guard; training budget and cadence, store, experiment) is the
  group key; with `clip.mode=backprop` its threshold too (one clamp for the stacked cells).
- **Only what is bit-identical.** Members of a batch have the same sequence length. A member
  of a stacked model computes exactly what it computes alone (K = 1), whatever the other
  members and its place among them (tests/test_batched.py), so a run's result does not
  depend on what it was batched with. Left-padding a shorter member would change that: the
  weight gradients and the readout sum over every time step of the batch's longest
  sequence, in blocks that depend on its length, so the rounding changes (measured:
  1e-7 to 2e-5 in the weights after 30 steps; docs/benchmark.md).
- **How many.** At most `train.batch_max` members per batch.
- **What the launcher sees.** One ordinary job per batch: the first member's overrides plus
  `batch_file=<sweep folder>/batches/<n>.json`, the file listing every member's overrides.
  The job composes each member's config from them (as the member's own job would be
  composed) and trains them together (`harness.train.train_batch_file`). A group of one is
  launched as the plain job it is.
- **What the sweeper gets back.** One JobReturn per member, in the order of the original
  jobs (`expand`), each with the member's own objective (final eval loss), so Optuna and the
  frontier search see the jobs they asked for.

Every member is logged as the run its separate job would log (same params, config hash and
status; metrics equal to float32 rounding; tag `batch` naming the runs trained with it), and
is skipped, resumed and locked on its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import names

# The config keys in which members of one batch may differ (harness/batched.py).
MEMBER_KEYS = (names.SEED, names.LR, names.CLIP_MODE, names.CLIP_THRESHOLD, names.ACTIVATION,
               names.INIT, "model.forget_bias", names.CHRONO, "model.chrono_t_max", names.GAP)
# Keys that never separate batches: the option names a job was composed from (the flattened
# config beside them decides).
IGNORED_KEYS = names.CHOICE_PARAMS
BATCHES_DIR = "batches"  # in the sweep folder: one JSON file per batched job


@dataclass(frozen=True)
class Candidate:
    """A job the sweeper is about to launch: its overrides, its group key (None: it runs
    alone) and its sequence length."""

    overrides: tuple[str, ...]
    key: tuple[tuple[str, str], ...] | None
    length: int
    limit: int  # train.batch_max


def group_key(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """What members of one batch share: every param but the member keys, and with
    `clip.mode=backprop` its threshold too (the stacked cells apply one clamp inside backprop
    for all members; the other modes clip each member's gradient on its own)."""
    shared = MEMBER_KEYS if params.get(names.CLIP_MODE) != "backprop" else \
        tuple(k for k in MEMBER_KEYS if k not in (names.CLIP_MODE, names.CLIP_THRESHOLD))
    return tuple(sorted((k, v) for k, v in params.items()
                        if k not in shared and k not in IGNORED_KEYS))


def plan(candidates: Sequence[Candidate]) -> list[list[int]]:
    """The batches: lists of indices into `candidates` (a list of one: a plain job). Where
    some are batched, the costliest first (members × longest sequence, ties in the order of
    their first job): on a few workers the last job launched sets the sweep's tail, so it
    should be short. Otherwise in the jobs' own order."""
    groups: dict[Any, list[int]] = {}
    batches: list[list[int]] = []
    for index, candidate in enumerate(candidates):
        if candidate.key is None:
            batches.append([index])
        else:  # one sequence length per batch: only what is bit-identical
            groups.setdefault((candidate.key, candidate.length), []).append(index)
    for members in groups.values():
        limit = candidates[members[0]].limit
        batches += [members[i:i + limit] for i in range(0, len(members), limit)]
    batches = sorted((sorted(batch) for batch in batches), key=lambda batch: batch[0])
    if all(len(batch) == 1 for batch in batches):
        return batches
    return sorted(batches, key=lambda batch: (
        -len(batch) * max(candidates[i].length for i in batch), batch[0]))


def write_batch(sweep_dir: Path, number: int, members: Sequence[Sequence[str]]) -> Path:
    """The batch file of one batched job: every member's overrides, in order."""
    folder = sweep_dir / BATCHES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{number}.json"
    path.write_text(json.dumps({"members": [list(m) for m in members]}, indent=1))
    return path.resolve()


def read_batch(path: str | Path) -> list[list[str]]:
    """Every member's overrides from a batch file (`write_batch`)."""
    return [list(m) for m in json.loads(Path(path).read_text())["members"]]


def batch_override(path: Path) -> str:
    return f"batch_file={path}"
