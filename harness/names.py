"""The one spelling of every name the harness writes: MLflow params, metrics, tags, artifacts.

Training writes these keys, the report reads them; both import them from here so a rename
cannot split the two. Params are the flattened resolved Hydra config (`task.gap`,
`model.name`, `clip.threshold`, ...), so config keys and MLflow params are the same strings.
"""

from __future__ import annotations

# --- params (flattened config keys that the report groups by) -------------------------
TASK = "task.name"
GAP = "task.gap"
MODEL = "model.name"
ACTIVATION = "model.activation"
HIDDEN_SIZE = "model.hidden_size"
INIT = "model.init"
CLIP_MODE = "clip.mode"
CLIP_THRESHOLD = "clip.threshold"
LR = "optim.lr"
OPTIMIZER = "optim.name"
SEED = "seed"

# --- tags -------------------------------------------------------------------------------
STATUS = "status"  # one of STATUSES
STATUS_REASON = "status_reason"  # why a run diverged, or how it ended
CONFIG_HASH = "config_hash"
GIT_COMMIT = "git_commit"
SOLVED, UNSOLVED, DIVERGED = "solved", "unsolved", "diverged"
FAILED = "failed"  # the job raised (a bug, out of memory): not a result
STATUSES = (SOLVED, UNSOLVED, DIVERGED, FAILED)

# --- metrics logged with a step (one point per log/eval step) ----------------------------
TRAIN_LOSS = "train_loss"
GRAD_NORM_PRE_CLIP = "grad_norm_pre_clip"  # global L2 norm before clipping, mean over window
CLIP_RATE = "clip_rate"  # share of steps in the window where clipping fired
EVAL_LOSS = "eval_loss"
EVAL_ACCURACY = "eval_accuracy"
EVAL_NORMALIZED_LOSS = "eval_normalized_loss"  # eval_loss / chance_loss

# --- metrics logged once, at the end of a run --------------------------------------------
CHANCE_LOSS = "chance_loss"
CHANCE_ACCURACY = "chance_accuracy"
FINAL_EVAL_LOSS = "final_eval_loss"
FINAL_EVAL_ACCURACY = "final_eval_accuracy"
BEST_EVAL_ACCURACY = "best_eval_accuracy"
STEPS_TO_SOLVE = "steps_to_solve"  # only for solved runs
STEPS_RUN = "steps_run"
WALL_TIME_S = "wall_time_s"
GRAD_NORM_PRE_CLIP_MAX = "grad_norm_pre_clip_max"
CLIP_RATE_TOTAL = "clip_rate_total"

# --- artifacts ---------------------------------------------------------------------------
CONFIG_ARTIFACT = "config.yaml"
GRAD_PROFILE_ARTIFACT = "grad_profile.csv"
# columns of grad_profile.csv: one row per (training step, time step t)
PROFILE_COLUMNS = ("step", "t", "lag", "grad_norm", "grad_norm_std")


def config_label(model: str, activation: str, clip_mode: str, clip_threshold: float) -> str:
    """Readable name of a configuration, without task, gap and seed: `lstm-tanh-norm1.0`.

    LSTM and GRU have no activation choice in torch, so theirs is always `tanh`.
    """
    clip = "noclip" if clip_mode == "none" else f"{clip_mode}{float(clip_threshold):g}"
    return f"{model}-{activation}-{clip}"


def run_name(task: str, model: str, activation: str, clip_mode: str, clip_threshold: float,
             gap: int, seed: int) -> str:
    """MLflow run name of one job: `copy-lstm-tanh-norm1-gap100-s0`."""
    return f"{task}-{config_label(model, activation, clip_mode, clip_threshold)}-gap{gap}-s{seed}"
