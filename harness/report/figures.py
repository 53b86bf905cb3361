"""The report's two figures: final accuracy vs gap, and the gradient-norm profile over lags.

Figures are drawn on bare `Figure` objects with an Agg canvas rather than through pyplot, so
building a report never opens a window, never changes the global backend, and leaves no
figures behind in pyplot's registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, ScalarFormatter

from harness import names
from harness.report.load import LABEL, P_GRAD_NORM, P_LAG, P_LAYER, P_STEP, RUN_ID

PALETTE = "colorblind"
# A log x axis only pays off when the gaps span about an order of magnitude.
LOG_X_SPAN = 8.0
GRAD_SYMBOL = r"$\Vert\partial L/\partial h_t\Vert$"
INIT, MIDDLE, FINAL = "init", "middle", "final"
_PHASE_STYLE = {INIT: "--", MIDDLE: ":", FINAL: "-"}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def label_colors(labels: Iterable[str]) -> dict[str, str]:
    """One fixed colour per configuration label, handed out in sorted label order.

    Built once per report from all labels, so a label has the same colour in every figure.
    The colour-blind palette has 10 colours; beyond that colours repeat.
    """
    ordered = sorted(set(labels))
    palette = sns.color_palette(PALETTE, n_colors=max(len(ordered), 1)).as_hex()
    return dict(zip(ordered, palette, strict=False))


def label_markers(labels: Iterable[str]) -> dict[str, str]:
    """One marker per label, changing every len(palette) labels in sorted order.

    With more labels than palette colours, colours repeat; the marker still tells them apart.
    """
    ordered = sorted(set(labels))
    n_colors = len(sns.color_palette(PALETTE))
    return {lab: _MARKERS[(i // n_colors) % len(_MARKERS)] for i, lab in enumerate(ordered)}


def save_png(fig: Figure, path: Path) -> None:
    """Write `fig` as PNG without the software/version stamp, so reruns give the same bytes."""
    # Attach the Agg canvas explicitly: output never depends on the default/GUI backend.
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _gap_axis(ax: Axes, gaps: np.ndarray) -> None:
    """Log-x when the gaps span more than LOG_X_SPAN, with the actual gaps as tick labels."""
    gaps = np.unique(gaps[np.isfinite(gaps)])
    if len(gaps) and gaps.min() > 0 and gaps.max() / gaps.min() > LOG_X_SPAN:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    if len(gaps):
        ax.set_xticks(gaps)


def _legend(fig: Figure, labels: list[str], colors: dict[str, str], markers: dict[str, str],
            extra: list[Line2D]) -> None:
    handles: list[Line2D] = [
        Line2D([], [], color=colors[lab], marker=markers[lab], label=lab) for lab in labels
    ]
    fig.legend(handles=[*handles, *extra], loc="outside right upper", title="configuration")


def accuracy_vs_gap(runs: pd.DataFrame, colors: dict[str, str], markers: dict[str, str],
                    experiment: str, path: Path) -> None:
    """One facet per task: final eval accuracy vs gap, one line per label, 95% CI over seeds."""
    tasks = sorted(runs[names.TASK].dropna().unique())
    n = max(len(tasks), 1)
    fig = Figure(figsize=(4.6 * n + 2.2, 4.2), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    seen: set[str] = set()
    for ax, task in zip(axes, tasks, strict=False):
        at_task = runs[runs[names.TASK] == task]
        data = at_task.dropna(subset=[names.GAP, names.FINAL_EVAL_ACCURACY]).copy()
        # seaborn wants plain floats, not pandas' nullable integers.
        data[names.GAP] = data[names.GAP].astype(float)
        labels = sorted(data[LABEL].unique())
        seen.update(labels)
        if data.empty:
            _empty(ax, "no final accuracy logged")
        else:
            sns.lineplot(
                data=data, x=names.GAP, y=names.FINAL_EVAL_ACCURACY, hue=LABEL,
                hue_order=labels, palette={lab: colors[lab] for lab in labels},
                style=LABEL, style_order=labels, markers={lab: markers[lab] for lab in labels},
                dashes=False, errorbar=("ci", 95), seed=0, legend=False, ax=ax,
            )
            # Chance may depend on the gap (e.g. via sequence length), so draw it per gap.
            chance = (
                data.dropna(subset=[names.CHANCE_ACCURACY])
                .groupby(names.GAP)[names.CHANCE_ACCURACY]
                .mean()
            )
            if len(chance) == 1:
                ax.axhline(float(chance.iloc[0]), ls="--", color="0.35", lw=1.2)
            elif len(chance) > 1:
                ax.plot(chance.index, chance.to_numpy(), ls="--", color="0.35", lw=1.2)
            _gap_axis(ax, data[names.GAP].to_numpy())
        ax.set_title(f"task: {task}")
        ax.set_xlabel("gap (time steps)")
        ax.set_ylabel("final eval accuracy (fraction correct)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
    if not tasks:
        _empty(axes[0], "no runs with a task")
    fig.suptitle(f"{experiment}: final eval accuracy vs gap (mean over seeds, 95% CI)")
    chance_handle = Line2D([], [], ls="--", color="0.35", label="chance accuracy")
    _legend(fig, sorted(seen), colors, markers, [chance_handle])
    save_png(fig, path)


PANEL_MODEL = "panel_model"
PHASE = "phase"
N_RUNS = "n_runs"
POOLED_COLUMNS = [names.TASK, PANEL_MODEL, names.GAP, LABEL, PHASE, P_LAYER, P_LAG, P_GRAD_NORM,
                  N_RUNS]


def _pooled_profiles(runs: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """Mean grad norm per (task, model/activation, label, phase, lag) at each panel's top gap.

    Only each run's last layer (the one next to the readout) is used. "final" is each run's
    own last profiled step, since runs stop at different steps; a run profiled only at step 0
    has no final curve. "middle" is the run's profiled step nearest half its last one (not
    step 0 nor the last). Non-finite values (diverged runs) and, after pooling, non-positive
    values (underflow) are dropped because the y axis is logarithmic.
    """
    keys = [RUN_ID, names.TASK, names.GAP, names.MODEL, names.ACTIVATION, LABEL]
    layer = profiles.groupby(RUN_ID)[P_LAYER].transform("max")
    data = profiles[profiles[P_LAYER] == layer].merge(runs[keys], on=RUN_ID, how="inner")
    data = data[np.isfinite(data[P_GRAD_NORM].astype(float))
                & data[P_LAG].notna() & data[P_STEP].notna()]
    if data.empty:
        return pd.DataFrame(columns=POOLED_COLUMNS)
    data = data.assign(
        **{PANEL_MODEL: data[names.MODEL].astype(str) + "-" + data[names.ACTIVATION].astype(str)}
    )
    top_gap = data.groupby([names.TASK, PANEL_MODEL])[names.GAP].transform("max")
    data = data[data[names.GAP] == top_gap]
    last_step = data.groupby(RUN_ID)[P_STEP].transform("max")
    init = data[data[P_STEP] == 0].assign(**{PHASE: INIT})
    final = data[(data[P_STEP] == last_step) & (last_step > 0)].assign(**{PHASE: FINAL})
    steps = data[[RUN_ID, P_STEP]].drop_duplicates().assign(last=last_step)
    inner = steps[(steps[P_STEP] > 0) & (steps[P_STEP] < steps["last"])]
    inner = inner.assign(distance=(inner[P_STEP] - inner["last"] / 2).abs())
    middle_steps = inner.sort_values([RUN_ID, "distance", P_STEP]).drop_duplicates(RUN_ID)
    middle = data.merge(middle_steps[[RUN_ID, P_STEP]], on=[RUN_ID, P_STEP]).assign(
        **{PHASE: MIDDLE})
    both = pd.concat([init, middle, final], ignore_index=True)
    group = [names.TASK, PANEL_MODEL, names.GAP, LABEL, PHASE, P_LAG]
    # Average within a run first, so a run scoring many positions per lag is not overweighted.
    per_run = both.groupby([*group, RUN_ID], sort=True).agg(
        **{P_GRAD_NORM: (P_GRAD_NORM, "mean"), P_LAYER: (P_LAYER, "max")}
    ).reset_index()
    pooled = per_run.groupby(group, sort=True).agg(
        **{P_GRAD_NORM: (P_GRAD_NORM, "mean"), N_RUNS: (RUN_ID, "count"),
           P_LAYER: (P_LAYER, "max")}
    ).reset_index()
    pooled[P_LAYER] = pooled[P_LAYER].round().astype(int)
    pooled[P_LAG] = pooled[P_LAG].round().astype(int)
    return pooled.loc[pooled[P_GRAD_NORM] > 0, POOLED_COLUMNS].reset_index(drop=True)


def grad_profile(runs: pd.DataFrame, profiles: pd.DataFrame, colors: dict[str, str],
                 markers: dict[str, str], experiment: str, path: Path) -> pd.DataFrame:
    """‖∂L/∂h_t‖ vs lag, log y, one panel per (task, model/activation) at its largest gap.

    Draws each run's last layer; returns the drawn data (columns `POOLED_COLUMNS`).
    """
    pooled = (_pooled_profiles(runs, profiles) if not profiles.empty
              else pd.DataFrame(columns=POOLED_COLUMNS))
    panels = (
        sorted(pooled.groupby([names.TASK, PANEL_MODEL]).groups) if not pooled.empty else []
    )
    ncols = min(max(len(panels), 1), 3)
    nrows = max(math.ceil(len(panels) / ncols), 1)
    fig = Figure(figsize=(4.6 * ncols + 2.4, 3.8 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    seen: set[str] = set()
    for ax, (task, model) in zip(axes, panels, strict=False):
        panel = pooled[(pooled[names.TASK] == task) & (pooled[PANEL_MODEL] == model)]
        gap = int(panel[names.GAP].iloc[0])
        for (label, phase), line in panel.groupby([LABEL, PHASE], sort=True):
            seen.add(str(label))
            ax.plot(line[P_LAG], line[P_GRAD_NORM], color=colors[str(label)],
                    ls=_PHASE_STYLE[str(phase)], lw=1.5, marker=markers[str(label)], ms=4,
                    markevery=max(len(line) // 8, 1))
        ax.set_yscale("log")
        ax.set_title(f"{task} · {model} · gap {gap} · last layer")
        ax.set_xlabel("lag: distance from the loss (time steps)")
        ax.set_ylabel(f"{GRAD_SYMBOL} (mean over seeds)")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels):]:
        if panels:
            ax.set_visible(False)
        else:
            _empty(ax, "no gradient profiles logged")
    fig.suptitle(f"{experiment}: gradient norm {GRAD_SYMBOL} vs lag, at init, mid-training "
                 "and at the end")
    phases = [
        Line2D([], [], color="0.3", ls=_PHASE_STYLE[INIT], label=f"{INIT} (step 0)"),
        Line2D([], [], color="0.3", ls=_PHASE_STYLE[MIDDLE],
               label=f"{MIDDLE} (profiled step nearest half the run)"),
        Line2D([], [], color="0.3", ls=_PHASE_STYLE[FINAL], label=f"{FINAL} (last profiled step)"),
    ]
    if panels:
        _legend(fig, sorted(seen), colors, markers, phases)
    save_png(fig, path)
    return pooled
