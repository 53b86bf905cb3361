"""The only MLflow writer, one module per lifetime:

- `store`: where a store lives, its creation and experiments, a full disk (the reader,
  harness.report, uses it too);
- `run`: a run's identity (params, config hash), its MLflow run and buffered writer;
- `sweep`: a multirun's parent run and its lists of unfinished jobs;
- `liveness`: which RUNNING runs and sweeps still have a live process (file locks), and
  closing the others;
- `links`: the UI's links to an experiment's runs table and to a run;
- `internals`: every reach past MLflow's public API (a SQLite store's tables read and written
  directly, the store behind a client, the server's bulk history endpoint), in one place and
  checked against the installed MLflow by tests/test_mlflow_internals.py.
"""
