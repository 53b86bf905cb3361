"""Registers `hydra/sweeper=frontier` in Hydra's ConfigStore. Hydra imports every plugin module
at start-up, so `_impl` imports mlflow and torch only inside the methods that run a sweep."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from ._impl import FrontierSweeperImpl


@dataclass
class FrontierSweeperConf:
    _target_: str = "hydra_plugins.frontier_sweeper.frontier_sweeper.FrontierSweeper"
    # Jobs in flight at once, each a probe or a batched job of probes (null: the launcher's
    # parallel jobs, joblib's n_jobs or SLURM's array_parallelism, else every core).
    max_batch_size: Any = None
    # Axes, like the basic sweeper's `params` (e.g. an experiment preset's model: rnn,lstm).
    params: dict[str, str] = field(default_factory=dict)
    # Explicit configurations, each a space-separated override set crossed with `params` and
    # the command line's axes: e.g. ["model=rnn clip=none", "model=rnn clip=norm
    # clip.threshold=1"] (empty: the full product of the axes).
    configurations: list[str] = field(default_factory=list)


ConfigStore.instance().store(group="hydra/sweeper", name="frontier", node=FrontierSweeperConf,
                             provider="harness")


class FrontierSweeper(FrontierSweeperImpl):
    """`hydra/sweeper=frontier` (the logic: ._impl and harness/frontier.py)."""
