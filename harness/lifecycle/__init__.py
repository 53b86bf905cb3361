"""The run lifecycle: what a job is, and what happens to its runs.

- `identity`: a job's identity (its validated config, params, run name, config hash, the
  options it was composed from) and a batched job's members;
- `signals`: SIGTERM / SIGUSR2 (kill, scancel, a SLURM time limit) stop a run with a checkpoint;
- `runs`: each run skipped when its config already finished, resumed from its checkpoint,
  held under its config's liveness lock (orphans of dead processes closed), opened and closed
  as an MLflow run, and trained by the driver (harness/loop.py) alone or with others.
"""
