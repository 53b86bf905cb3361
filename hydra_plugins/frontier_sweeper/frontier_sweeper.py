"""Registers `hydra/sweeper=frontier` in Hydra's ConfigStore. Light on purpose: Hydra imports
every plugin module at start-up, so the sweeper's work lives in `_impl`, imported only when
the sweeper is used (as Hydra's optuna sweeper does)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class FrontierSweeperConf:
    _target_: str = "hydra_plugins.frontier_sweeper.frontier_sweeper.FrontierSweeper"
    # Probes launched at once (null: every probe the search needs now, across configurations).
    max_batch_size: Any = None
    # Axes, like the basic sweeper's `params` (e.g. an experiment preset's model: rnn,lstm).
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="frontier", node=FrontierSweeperConf,
                             provider="harness")


class FrontierSweeper(Sweeper):
    def __init__(self, max_batch_size: int | None = None,
                 params: dict[str, str] | None = None) -> None:
        from ._impl import FrontierSweeperImpl

        self.sweeper = FrontierSweeperImpl(max_batch_size, params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function,
                           config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
