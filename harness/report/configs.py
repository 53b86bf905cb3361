"""Configurations as a reader names them: one row per (task, configuration label) with its plain
name (`tanh RNN`, `IRNN`, `ReLU RNN clipped at 1`, `LSTM, chrono init`) and what sets its size
and pace (hidden size, parameter count, learning rate).

A plain name is built from one mapping per part of the label (`harness.names.config_label`):
the cell (its spec's `title` in `harness.cells.CELLS`), the activation of
a cell whose spec takes several (`ACTIVATION_NAMES`), an init that is not the cell's own,
chrono init, layers and direction, then the clipping (`clip_name`), then any other swept axis
the label carries. The learning rate and the hidden size are columns of their own, shown where
they vary. Within a task an unclipped configuration whose model is also run clipped reads
`ReLU RNN, no clipping`, so that no name leaves its clipping to be guessed.
"""

from __future__ import annotations

import math

import pandas as pd

from harness import names
from harness.cells import CELLS
from harness.report.columns import CLIP_SETTING, LABEL, NO_CLIP_SETTING
from harness.report.frontier import LR as ROW_LR  # the lr column of the rows `named` is given

# The plain name of each cell (`model.name`); tests check every registered cell has one.
# Names of their own in the literature: (cell, activation, init) -> name.
NAMED = {("rnn", "relu", "identity"): "IRNN"}  # Le, Jaitly & Hinton 2015
# The activation of a cell that takes several, said before the cell's name: `ReLU RNN`.
ACTIVATION_NAMES = {"tanh": "tanh", "relu": "ReLU", "leaky_relu": "leaky-ReLU",
                    "hard_tanh": "hard-tanh", "modrelu": "modReLU"}
DEFAULT_INIT = "default"
# A cell's own activation and init (its conf/model option's): left unsaid in its name. A cell
# that takes one activation (the gated cells, the uRNN) never has it said.
OWN = {"orth_rnn": ("modrelu", "orthogonal")}
NO_CLIPPING = "no clipping"

# Columns of `configurations`, one row per (task, label).
SHORT_NAME = "short_name"  # the plain name without the lr and hidden size
MODEL_NAME = "model_name"  # the plain name of the model alone, without clipping or axes
AXES_TEXT = "axes"  # the label's other swept axes, as `key=value` ("" for none)
COLUMNS = (names.TASK_LABEL, LABEL, SHORT_NAME, MODEL_NAME, CLIP_SETTING, AXES_TEXT, names.LR,
           names.HIDDEN_SIZE, names.PARAMETER_COUNT)
# Swept axes that are columns of their own, not part of the plain name.
OWN_COLUMNS = (names.LR, names.HIDDEN_SIZE)


def _flag(value: object) -> bool:
    return str(value).strip().lower() == "true"


def model_name(model: str, activation: str, init: str = DEFAULT_INIT, chrono: bool = False,
               num_layers: int = 1, bidirectional: bool = False) -> str:
    """`tanh RNN`, `ReLU RNN`, `IRNN`, `LSTM`, `orthogonal RNN`, `GRU, chrono init, 2 layers`."""
    own_activation, own_init = OWN.get(model, (None, DEFAULT_INIT))
    base = NAMED.get((model, activation, init))
    if base is None:
        cell = CELLS.get(model)
        base = cell.title or model if cell is not None else model
        if (cell is None or len(cell.activations) > 1) and activation != own_activation:
            base = f"{ACTIVATION_NAMES.get(activation, activation)} {base}"
        if init not in (DEFAULT_INIT, own_init):
            base += f", {init} init"
    variants = ((chrono, "chrono init"), (num_layers != 1, f"{num_layers} layers"),
                (bidirectional, "bidirectional"))
    return ", ".join([base, *(text for on, text in variants if on)])


def clip_name(mode: object, threshold: object) -> str:
    """`clipped at 1` (norm clipping), `value-clipped at 0.5`; "" without clipping."""
    text = "" if mode is None or mode is pd.NA or mode != mode else str(mode)
    if text in ("", NO_CLIP_SETTING):
        return ""
    value = pd.to_numeric(pd.Series([threshold]), errors="coerce").iloc[0]
    at = f" at {float(value):g}" if value == value else ""
    return f"clipped{at}" if text == "norm" else f"{text}-clipped{at}"


def size_text(count: object) -> str:
    """A parameter count as read at a glance: `135`, `4.54k`, `10.4k`, `1.2M`; "" if none."""
    if count is None or count is pd.NA or count != count:
        return ""
    n = float(count)  # type: ignore[arg-type]
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    return f"{n / 1e3:.3g}k" if n >= 1e3 else f"{int(n)}"


def _most_common(values: pd.Series) -> object:
    """The most frequent non-missing value (the smallest on a tie), or None."""
    found = values.dropna()
    if found.empty:
        return None
    counts = found.value_counts()
    return sorted(counts[counts == counts.max()].index)[0]


def _param(params: pd.DataFrame, key: str, default: object) -> pd.Series:
    return (params[key] if key in params.columns
            else pd.Series([None] * len(params), index=params.index)).fillna(default)


def configurations(runs: pd.DataFrame, params: pd.DataFrame,
                   label_axes: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per (task, label) of `runs` (COLUMNS), in that order; `params` is
    `Sweep.params` (the same row order as `runs`), `label_axes` the swept axes the labels carry
    (`Sweep.label_axes`)."""
    keyed = runs.dropna(subset=[names.TASK_LABEL]).copy()
    params = params.reset_index(drop=True).loc[keyed.index]
    keyed[names.CHRONO] = _param(params, names.CHRONO, "False").map(_flag).to_numpy()
    keyed[names.NUM_LAYERS] = pd.to_numeric(_param(params, names.NUM_LAYERS, 1),
                                            errors="coerce").fillna(1).astype(int).to_numpy()
    keyed[names.BIDIRECTIONAL] = _param(params, names.BIDIRECTIONAL, "False").map(
        _flag).to_numpy()
    keyed[names.LR] = pd.to_numeric(_param(params, names.LR, None),
                                    errors="coerce").to_numpy()
    axes = [a for a in label_axes if a not in OWN_COLUMNS]
    keyed[AXES_TEXT] = [" ".join(f"{a}={v}" for a, v in zip(axes, row, strict=True))
                        for row in _axes_values(params, axes)]
    rows = []
    for (task, label), group in keyed.groupby([names.TASK_LABEL, LABEL], sort=True):
        first = group.iloc[0]
        init = first[names.INIT]
        rows.append({
            names.TASK_LABEL: str(task), LABEL: str(label),
            MODEL_NAME: model_name(str(first[names.MODEL]), str(first[names.ACTIVATION]),
                                   DEFAULT_INIT if pd.isna(init) else str(init),
                                   bool(first[names.CHRONO]), int(first[names.NUM_LAYERS]),
                                   bool(first[names.BIDIRECTIONAL])),
            CLIP_SETTING: str(first[CLIP_SETTING]),
            "_clip": clip_name(first[names.CLIP_MODE], first[names.CLIP_THRESHOLD]),
            AXES_TEXT: str(first[AXES_TEXT]),
            names.LR: _most_common(group[names.LR]),
            names.HIDDEN_SIZE: _most_common(group[names.HIDDEN_SIZE]),
            names.PARAMETER_COUNT: _most_common(group[names.PARAMETER_COUNT]),
        })
    table = pd.DataFrame(rows, columns=[*COLUMNS, "_clip"])
    table[SHORT_NAME] = _short_names(table)
    for column in (names.HIDDEN_SIZE, names.PARAMETER_COUNT):
        table[column] = pd.to_numeric(table[column], errors="coerce").round().astype("Int64")
    table[names.LR] = pd.to_numeric(table[names.LR], errors="coerce").astype(float)
    return table[list(COLUMNS)]


def _axes_values(params: pd.DataFrame, axes: list[str]) -> list[tuple[str, ...]]:
    columns = [_param(params, a, "unset").astype(str) for a in axes]
    return list(zip(*columns, strict=True)) if columns else [()] * len(params)


def _short_names(table: pd.DataFrame) -> list[str]:
    """Each row's plain name but for lr and hidden size: the model, its clipping (`no clipping`
    where the same model and axes also run clipped on the task), its other axes."""
    out = []
    for row in table.to_dict("records"):
        same = table[(table[names.TASK_LABEL] == row[names.TASK_LABEL])
                     & (table[MODEL_NAME] == row[MODEL_NAME])
                     & (table[AXES_TEXT] == row[AXES_TEXT])]
        name = str(row[MODEL_NAME])
        if row["_clip"]:
            name += f" {row['_clip']}"
        elif (same["_clip"] != "").any():
            name += f", {NO_CLIPPING}"
        if row[AXES_TEXT]:
            name += f", {row[AXES_TEXT]}"
        out.append(name)
    return out


# Columns `named` adds to the rows it is given.
NAME = "configuration"  # the plain name, unique among the task's rows
BARE_NAME = "model"  # NAME without the clipping: what clipped and unclipped runs share


def named(rows: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """`rows` (one per (task, label), with an `lr` column: the frontier's, or empty) with their
    configuration's SHORT_NAME, lr (the row's where it has one), hidden size and parameter
    count, and NAME: the short name with `lr 0.01` and `64 units` where they vary among the
    task's rows, and the label added to a name still shared. A row whose label no run carries
    (a frontier row without probe runs) is named by its label."""
    extra = configs[[names.TASK_LABEL, LABEL, SHORT_NAME, MODEL_NAME, AXES_TEXT,
                     names.HIDDEN_SIZE, names.PARAMETER_COUNT, names.LR]].rename(
        columns={names.LR: "_lr"})
    out = rows.merge(extra, on=[names.TASK_LABEL, LABEL], how="left", validate="one_to_one")
    out[SHORT_NAME] = out[SHORT_NAME].fillna(out[LABEL])
    out[ROW_LR] = pd.to_numeric(out[ROW_LR], errors="coerce").astype(float).fillna(
        pd.to_numeric(out["_lr"], errors="coerce").astype(float))
    full, bare = [], []
    for row in out.to_dict("records"):
        task = out[out[names.TASK_LABEL] == row[names.TASK_LABEL]]
        suffix = ""
        if task[ROW_LR].nunique() > 1 and lr_text(row[ROW_LR]):
            suffix += f", lr {lr_text(row[ROW_LR])}"
        if task[names.HIDDEN_SIZE].nunique() > 1 and not pd.isna(row[names.HIDDEN_SIZE]):
            suffix += f", {int(row[names.HIDDEN_SIZE])} units"
        full.append(f"{row[SHORT_NAME]}{suffix}")
        model = row[LABEL] if pd.isna(row[MODEL_NAME]) else row[MODEL_NAME]
        bare.append(", ".join(str(p) for p in (model, row[AXES_TEXT]) if p and not pd.isna(p))
                    + suffix)
    twice = pd.Series(list(zip(out[names.TASK_LABEL], full, strict=True))).duplicated(
        keep=False).tolist()
    out[NAME] = [f"{name} ({label})" if dup else name
                 for name, label, dup in zip(full, out[LABEL], twice, strict=True)]
    out[BARE_NAME] = bare
    return out.drop(columns=["_lr", MODEL_NAME, AXES_TEXT])


def lr_text(lr: object) -> str:
    """A learning rate as the configs write it: `0.01`, `0.003`; "" where unknown."""
    if lr is None or lr is pd.NA:
        return ""
    value = float(lr)  # type: ignore[arg-type]
    return "" if not math.isfinite(value) else f"{value:g}"
