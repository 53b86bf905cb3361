"""Registers `hydra/sweeper=harness`: Hydra's basic sweeper that checks every job's config
before any job starts (the logic: harness.sweeping.HarnessSweeper). Hydra instantiates only
plugin classes defined under the `hydra_plugins` package, hence this subclass."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from harness.sweeping import HarnessSweeper, HarnessSweeperConf


class HarnessBasicSweeper(HarnessSweeper):
    """`hydra/sweeper=harness` (the project's default)."""


@dataclass
class HarnessBasicSweeperConf(HarnessSweeperConf):
    _target_: str = "hydra_plugins.harness_sweeper.harness_sweeper.HarnessBasicSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="harness",
                             node=HarnessBasicSweeperConf, provider="harness")
