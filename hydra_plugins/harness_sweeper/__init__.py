"""Hydra plugin: the `harness` sweeper (harness/sweeping.py), registered as
`hydra/sweeper=harness`; conf/config.yaml makes it the default."""
