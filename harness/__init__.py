"""The engine of the harness: config schemas, models, clipping, diagnostics, training loop,
MLflow tracking, Hydra entry point and callbacks, and the report (`harness.report`).

Data flows one way: conf/ -> harness.train -> tasks + harness.models -> harness.loop ->
harness.tracking -> MLflow store -> harness.report -> reports/<experiment>/.
"""
