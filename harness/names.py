"""The one spelling of every name the harness writes: MLflow params, metrics, tags, artifacts.

Training writes these keys, the report reads them; both import them from here so a rename
cannot split the two. Params are the flattened resolved Hydra config (`task.gap`,
`model.name`, `clip.threshold`, ...), so config keys and MLflow params are the same strings.
"""

from __future__ import annotations

from collections.abc import Mapping

# --- params (flattened config keys that the report groups by) -------------------------
TASK = "task.name"
GAP = "task.gap"
MODEL = "model.name"
ACTIVATION = "model.activation"
HIDDEN_SIZE = "model.hidden_size"
INIT = "model.init"
NUM_LAYERS = "model.num_layers"
BIDIRECTIONAL = "model.bidirectional"
CHRONO = "model.chrono"
CLIP_MODE = "clip.mode"
CLIP_THRESHOLD = "clip.threshold"
LR = "optim.lr"
OPTIMIZER = "optim.name"
SEED = "seed"
TRAIN_STEPS = "train.steps"  # the step budget a run was started with
TASK_LABEL = "task"  # param and report column: the task option, e.g. `adding_mean`
GAP_MIN = "task.gap_min"  # variable gaps: each sequence's gap uniform in [gap_min, gap]
# The config groups whose chosen option (`hydra.runtime.choices`) is logged as a param of that
# name: `task=adding_mean`, `model=irnn`, `optim=adam`, `clip=norm`, `experiment=demo` (not
# part of the config hash: the flattened config beside it says what the option set; never a
# swept axis of its own, since their groups' keys are).
TASK_CHOICE, MODEL_CHOICE, OPTIM_CHOICE, CLIP_CHOICE = TASK_LABEL, "model", "optim", "clip"
CHOICE_PARAMS = (TASK_CHOICE, MODEL_CHOICE, OPTIM_CHOICE, CLIP_CHOICE, "experiment")
EXPERIMENT_NAME = "experiment_name"
# Params that say where or how fast a run executes, not what it computes: not part of the
# config hash (harness/tracking/run.py), never a report axis (a batched member's config has
# `batched_seeds` null: it is the run of its `seed`).
NON_SEMANTIC_PREFIXES = ("tracking.", "report.", "train.threads", "train.checkpoint", "force",
                         "batched_seeds", "train.device")
CHECKPOINT_DIR = "train.checkpoint_dir"  # where a run's checkpoint and liveness lock live

# --- tags -------------------------------------------------------------------------------
STATUS = "status"  # one of STATUSES
STATUS_REASON = "status_reason"  # why a run diverged, or how it ended
CONFIG_HASH = "config_hash"
# MLflow's own system tags (the UI shows them on a run's page and in the runs table)
GIT_COMMIT = "mlflow.source.git.commit"  # the commit, `-dirty` when tracked files changed
SOURCE_NAME = "mlflow.source.name"  # the entry point: `harness-train`
SOURCE_TYPE = "mlflow.source.type"  # `LOCAL`
# MLflow 3's experiment kind (experiment tag `mlflow.experimentKind`): the harness marks its
# experiments as model training. It does not make a bare experiment link open on the runs
# table in a fresh browser (the UI keeps its GenAI/training switch in the browser; measured
# with MLflow 3.17): the links the harness prints end in `/runs` (harness/tracking/links.py).
EXPERIMENT_KIND = "mlflow.experimentKind"
TRAINING_EXPERIMENT = "custom_model_development"
TORCH_THREADS = "torch_threads"  # the torch threads the job used (train.threads, SLURM, cores)
DEVICE = "device"  # tag: where the run trained (`cpu`, `cuda`; train.device resolved)
BATCHED_SEEDS = "batched_seeds"  # tag on a batched member's run: the seeds of its batch, `0,1,2`
BATCH = "batch"  # tag on a member of a sweep's batched job: the run names trained with it
RUN_KIND = "run_kind"  # "sweep" on a multirun's parent run; absent on jobs
SWEEP_KIND = "sweep"
SWEEP_ID = "sweep_id"  # on every job of a multirun: its parent run's id
PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a job under its sweep
SOLVED, UNSOLVED, DIVERGED = "solved", "unsolved", "diverged"
FAILED = "failed"  # the job raised (a bug, out of memory): not a result
KILLED = "killed"  # interrupted (Ctrl-C, SIGTERM): not a result; rerunning resumes it
STATUSES = (SOLVED, UNSOLVED, DIVERGED, FAILED, KILLED)
# How a run ended, from its eval-loss history (harness/outcome.py has the rule): solved and
# diverged as in `status`; an unsolved run is `improving` (its loss still falling at the end of
# the budget: censored, "not yet"), `chance` (never left the memoryless level) or `plateau`
# (left it, then stopped improving).
END_STATE = "end_state"  # tag
IMPROVING, CHANCE, PLATEAU = "improving", "chance", "plateau"
END_STATES = (SOLVED, DIVERGED, IMPROVING, CHANCE, PLATEAU)
SUCCESS_CRITERION = "success_criterion"  # tag: the task's rule for `solved`, with its threshold
# tag on a run continued past its `train.steps` (a param, immutable): the step budget it was
# trained to (frontier.continue_to; harness/lifecycle/runs.py). Absent: train.steps.
STEPS_BUDGET = "steps_budget"
RUNNING = "running"  # a sweep's count of jobs without a status yet (`jobs_running`)

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

# --- gradient diagnostics, logged at every profile step (step = training step) -------------
# Fitted on the last layer's profile, over the lags where the norm is finite and nonzero.
GRAD_DECAY_RATE = "grad_decay_rate"  # least-squares slope of ln‖∂L/∂h_t‖ vs lag; < 0: vanishing
GRAD_DECAY_R2 = "grad_decay_r2"  # R² of that fit
GRAD_HALF_LIFE = "grad_half_life"  # ln 2 / -grad_decay_rate, in time steps (only when < 0)
GRAD_REACH = "grad_reach"  # largest lag whose norm is >= REACH_FRACTION of the largest norm
REACH_FRACTION = 1e-6  # Pascanu, Mikolov & Bengio 2013's "steps in the past"
GRAD_NORM_POST_CLIP = "grad_norm_post_clip"  # window mean of the global norm after clipping
GRAD_NORM_POST_CLIP_MAX = "grad_norm_post_clip_max"  # summary
# Recurrent dynamics: per layer and gate block of W_hh, e.g. spectral_radius_l0_f
SPECTRAL_RADIUS = "spectral_radius"
SINGULAR_VALUE_MAX = "singular_value_max"
FORGET_GATE_MEAN = "forget_gate_mean"  # LSTM, last layer, mean over batch, units and time
FORGET_GATE_SATURATED = "forget_gate_saturated"  # share of activations < 0.05 or > 0.95
UPDATE_GATE_MEAN = "update_gate_mean"  # GRU, likewise for the update gate z
UPDATE_GATE_SATURATED = "update_gate_saturated"
# uRNN: modReLU's rescale max(|z| + b, 0) / |z| per complex unit, likewise (near 0: the unit is
# zeroed; near 1: passed on unchanged)
MODRELU_SCALE_MEAN = "modrelu_scale_mean"
MODRELU_SCALE_SATURATED = "modrelu_scale_saturated"
# minGRU: its update gate z, the share of the candidate written (the paper's convention; the
# GRU's update gate is the share kept); minLSTM: its normalized forget gate f' = f / (f + i),
# the share kept (i' = 1 - f'). Likewise mean and saturated share.
MINGRU_UPDATE_GATE_MEAN = "mingru_update_gate_mean"
MINGRU_UPDATE_GATE_SATURATED = "mingru_update_gate_saturated"
MINLSTM_FORGET_GATE_MEAN = "minlstm_forget_gate_mean"
MINLSTM_FORGET_GATE_SATURATED = "minlstm_forget_gate_saturated"
# LRU: the moduli |λ| of its diagonal recurrence's eigenvalues over the units, per layer, in
# place of the spectral radius: lambda_modulus_min_l0, ...
LAMBDA_MODULUS_MIN = "lambda_modulus_min"
LAMBDA_MODULUS_MEDIAN = "lambda_modulus_median"
LAMBDA_MODULUS_MAX = "lambda_modulus_max"
# The model's parameter count (summary metric; the memory check counts the same from the spec)
PARAMETER_COUNT = "parameter_count"
DIVERGED_STEP = "diverged_step"  # summary: the step at which a run diverged

# --- a sweep's parent run ----------------------------------------------------------------
SWEEP_OVERRIDES = "sweep_overrides"  # param: the command line's overrides
SWEEP_SPACE = "sweep_space"  # param: the preset's hydra.sweeper.params, as JSON
JOBS = "jobs"  # metric: runs this sweep created; and one `jobs_<status>` per status
SWEEP_TUNING = "sweep_tuning"  # tag: how a tuning sweep (Optuna) chose its hyperparameters
# a tuning sweep's parent run: over the trials (runs) it created with a finite objective
TUNING_OBJECTIVE = FINAL_EVAL_LOSS  # what a job returns to the sweeper; minimized
TUNING_BEST = "tuning_best"  # metric: the best (lowest) objective of the trials
TUNING_MEDIAN = "tuning_median"  # metric: the median objective of the trials
TUNING_TRIALS = "tuning_trials"  # metric: how many trials the two summarize
TUNING_BEST_PARAMS = "tuning_best_params"  # tag: the best trial's tuned values, `optim.lr=0.003`
TUNING_BEST_RUN = "tuning_best_run"  # tag: the best trial's run id
# a frontier sweep's parent run (hydra/sweeper=frontier; harness/frontier.py)
FRONTIER_RULE = "frontier_rule"  # tag: the decision rule, the quantile it targets, the lr rule
FRONTIER_ARTIFACT = "frontier.csv"  # one row per configuration, columns FRONTIER_COLUMNS
FRONTIER_COLUMNS = ("configuration", "task", "lr", "gap_held", "held_solved", "held_seeds",
                    "gap_failed", "censored_gaps", "probes", "runs", "grid_runs",
                    # the logistic fit of P(solved) on ln gap (harness.frontier.solve_curve):
                    # the gap at 0.5 and its 95% bootstrap interval (empty: undefined)
                    "p50_gap", "p50_low", "p50_high",
                    # with frontier.lr_every_level: the rate each probed level was read at,
                    # `5:0.01 20:0.003` (empty: one rate for every level)
                    "level_lrs")
FRONTIER_PROBES_ARTIFACT = "frontier_probes.csv"  # every probed (configuration, gap, seed)
FRONTIER_PROBE_COLUMNS = ("configuration", "task", "lr", "gap", "seed", "status", "end_state",
                          "outcome", "run_id")
FRONTIER_RUNS = "frontier_runs"  # metric: runs the search used (finished or reused)
FRONTIER_GRID_RUNS = "frontier_grid_runs"  # metric: runs of the full grid (ladder x seeds)
# metric: steps the search's runs trained past their train.steps (continuations of runs still
# improving there), for a comparison of its cost with the grid's
FRONTIER_EXTRA_STEPS = "frontier_extra_steps"
# metric: how busy the workers were, training seconds / (workers x the search's wall time)
FRONTIER_UTILIZATION = "frontier_utilization"
SWEEP_DIR = "sweep_dir"  # tag: the sweep's folder (absolute); its lock tells whether it is alive

# --- artifacts ---------------------------------------------------------------------------
CONFIG_ARTIFACT = "config.yaml"
GRAD_PROFILE_ARTIFACT = "grad_profile.csv"
# tasks with variable gaps (gap_min..gap_max): final evaluation binned by each sequence's gap,
# columns EVAL_BY_GAP_COLUMNS
EVAL_BY_GAP_ARTIFACT = "eval_by_gap.csv"
EVAL_BY_GAP_COLUMNS = ("gap", "sequences", "eval_loss", "eval_accuracy")
# columns of grad_profile.csv: one row per (training step, layer, time step t); hidden_norm is
# the batch mean of ‖h_t‖ of that layer
PROFILE_COLUMNS = ("step", "layer", "t", "lag", "grad_norm", "grad_norm_std", "hidden_norm")


# A task param whose value selects a distinct task option, i.e. another `conf/task/<option>.yaml`
# with its own chance level: {task.name: (param, {value (lower case): option})}.
TASK_VARIANTS = {
    "adding": ("task.variant", {"mean": "adding_mean", "hochreiter1997": "adding_hochreiter1997"}),
    "delayed_recall": ("task.filler", {"noise": "delayed_recall_noise"}),
    "temporal_order": ("task.n_relevant", {"3": "temporal_order3"}),
    "sequential_digits": ("task.permuted", {"true": "sequential_digits_permuted"}),
}


def task_label(task: str, params: Mapping[str, object]) -> str:
    """The task option a run used, from its flattened params: `adding`, `adding_mean`, ...

    The same spelling as the config option, so runs of variants with different chance levels
    (the mean vs the sum in adding) are never pooled in a report.
    """
    key, options = TASK_VARIANTS.get(task, ("", {}))
    return options.get(str(params.get(key, "")).lower(), task)


def block_key(metric: str, layer: int, block: str, *, reverse: bool = False) -> str:
    """Metric key of one gate block of one layer's W_hh: `spectral_radius_l0_f`, and
    `spectral_radius_l0_reverse_f` for the backward direction of a bidirectional layer."""
    return f"{metric}_l{layer}{'_reverse' if reverse else ''}_{block}"


def config_label(model: str, activation: str, clip_mode: str, clip_threshold: float, *,
                 init: str = "default", chrono: bool = False, num_layers: int = 1,
                 bidirectional: bool = False) -> str:
    """Readable name of a configuration, without task, gap and seed: `lstm-tanh-norm1`.

    LSTM and GRU have no activation choice in torch, so theirs is always `tanh`. A
    non-default init, chrono, more than one layer and bidirectional are marked before the
    clipping: `rnn-relu-identity-noclip` (IRNN), `lstm-tanh-chrono-l2-bi-norm1`.
    """
    clip = "noclip" if clip_mode == "none" else f"{clip_mode}{float(clip_threshold):g}"
    parts = [model, activation]
    if init != "default":
        parts.append(init)
    if chrono:
        parts.append("chrono")
    if num_layers != 1:
        parts.append(f"l{num_layers}")
    if bidirectional:
        parts.append("bi")
    return "-".join([*parts, clip])


def run_name(task: str, model: str, activation: str, clip_mode: str, clip_threshold: float,
             gap: int, seed: int, *, init: str = "default", chrono: bool = False,
             num_layers: int = 1, bidirectional: bool = False, gap_min: int | None = None,
             axes: Mapping[str, object] | None = None) -> str:
    """MLflow run name of one job: `copy-lstm-tanh-norm1-gap100-s0`.

    A variable-gap run shows its range (`gap1-60`: gaps drawn from 1 to 60). `axes`: the
    values of the sweep's varying keys that the rest of the name does not show (`NAMED_KEYS`),
    each as `axis_part` spells it, before the gap: `delayed_recall-lstm-tanh-noclip-lr3e-3-
    gap20-s0`."""
    label = config_label(model, activation, clip_mode, clip_threshold, init=init, chrono=chrono,
                         num_layers=num_layers, bidirectional=bidirectional)
    extra = "".join(f"-{axis_part(key, value)}" for key, value in (axes or {}).items())
    span = f"{gap_min}-{gap}" if gap_min is not None and gap_min < gap else f"{gap}"
    return f"{task}-{label}{extra}-gap{span}-s{seed}"


# The keys a run name shows without help (task option, cell, activation, init, chrono, layers,
# direction, clipping, gap range, seed): a sweep's varying key among them adds nothing to it.
# The clip threshold counts as shown: without clipping it does not act.
NAMED_KEYS = frozenset({TASK, TASK_LABEL, *(key for key, _ in TASK_VARIANTS.values()), MODEL,
                        MODEL_CHOICE, ACTIVATION, INIT, CHRONO, NUM_LAYERS, BIDIRECTIONAL,
                        CLIP_MODE, CLIP_CHOICE, CLIP_THRESHOLD, GAP, GAP_MIN, "task.gap_max",
                        SEED})
# How a varying key is spelled in a run name: `lr3e-3`, `h64`; the option alone for the
# optimizer (`sgd`); any other key by its last part (`momentum0.9`).
AXIS_PREFIXES = {LR: "lr", HIDDEN_SIZE: "h", OPTIMIZER: "", OPTIM_CHOICE: ""}


def axis_part(key: str, value: object) -> str:
    """One varying key of a run name: its prefix (`AXIS_PREFIXES`) and its value, numbers
    written short (`lr3e-3`, `h64`, `steps2000`, `sgd`)."""
    prefix = AXIS_PREFIXES.get(key, key.rpartition(".")[2])
    return f"{prefix}{short_number(value)}"


def short_number(value: object) -> str:
    """A number as a name shows it: below 0.1 in short scientific notation (`3e-3`, `2.5e-4`),
    else as `g` formats it (`0.5`, `64`); anything else as its text."""
    text = str(value)
    if text in ("True", "False"):
        return text.lower()
    try:
        number = float(text)
    except ValueError:
        return text
    if number != 0 and abs(number) < 0.1:
        mantissa, _, exponent = f"{number:.3e}".partition("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{number:g}"
