"""What several test files share: running the console scripts as a user would (`cli`), real
servers on 127.0.0.1 (`servers`: an `mlflow server`; `slurm`: a single-node SLURM cluster).
Fixtures live in tests/conftest.py."""
