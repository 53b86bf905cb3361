"""Registers `hydra/sweeper=harness_optuna`: Hydra's Optuna sweeper whose every batch of
trials is checked, launched and reported by the project's sweeper (harness.sweeping), so an
invalid trial is refused in one line with exit 2 before it starts, the sweep's parent run opens
only after the first batch passed, and each trial prints its progress line."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf

from harness.sweeping import BatchLauncher, HarnessSweeper


class HarnessOptunaSweeper(OptunaSweeper):
    """OptunaSweeper whose launcher is a HarnessSweeper's `launch_batch`."""

    opens_parent_run = True  # harness.callbacks.lazy_start: the checks come first

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        # Imported here, not with this module: Hydra imports every plugin module at each start,
        # and optuna takes 2 s to import (a bad single run would wait for it).
        import optuna

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if not OmegaConf.select(config, "hydra.verbose"):  # its "A new study created" on stderr
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        checker = HarnessSweeper()
        checker.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        checker.total_jobs = int(self.sweeper.n_trials)
        self.sweeper.launcher = BatchLauncher(checker)


@dataclass
class HarnessOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = ("hydra_plugins.harness_sweeper.harness_optuna_sweeper."
                     "HarnessOptunaSweeper")


ConfigStore.instance().store(group="hydra/sweeper", name="harness_optuna",
                             node=HarnessOptunaSweeperConf, provider="harness")
