"""The report's own column names, beside the MLflow keys of `harness.names`: a run's identity
and location, its configuration label and the groupings the figures use, and the columns of
the metric-history frame. The store reads (`load`) and every table name them from here.
"""

from __future__ import annotations

from harness import names

RUN_ID = "run_id"
RUN_NAME = "run_name"
LABEL = "label"
EXPERIMENT_ID = "experiment_id"
ARTIFACT_URI = "artifact_uri"
START_TIME = "start_time"
# final eval loss / chance loss, per run: what `eval_normalized_loss` is at the last evaluation
FINAL_NORMALIZED_LOSS = f"final_{names.EVAL_NORMALIZED_LOSS}"
# What a figure colours by and what it facets by: the model variant (model-activation, plus
# the init when it is not the default: `rnn-relu-identity` is the IRNN) and the clip setting.
MODEL_VARIANT = "model_variant"
CLIP_SETTING = "clip_setting"
NO_CLIP_SETTING = "none"
# Columns of the long history frame of `load_metric_histories`.
KEY, STEP, VALUE = "key", "step", "value"
