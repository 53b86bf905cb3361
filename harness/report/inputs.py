"""What one report is computed from: the store's reads, and every table derived from them,
computed once on first use (the sections and figures of `harness.report.sections` share it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from harness import names
from harness.report import (
    claims,
    clip_effect,
    configs,
    frontier_grads,
    gradients,
    held,
    overview,
    plotting,
    tables,
    variable_gap,
)
from harness.report import findings as findings_
from harness.report import frontier as frontier_
from harness.report import headline as headline_
from harness.report.load import (
    EXPERIMENT_ID,
    LABEL,
    RUN_ID,
    Sweep,
    artifact_runs,
    load_drawn_profiles,
    load_eval_by_gap,
    load_metric_histories,
    load_sweep,
)


def _histories(sweep: Sweep, tracking_uri: str) -> pd.DataFrame:
    """Histories only of the runs the gradient figures draw (each configuration's top gap)."""
    norm_plan = gradients.grad_norm_plan(sweep.runs, sweep.finals)
    spectral_plan = gradients.spectral_plan(sweep.runs, sweep.finals)
    plan = {rid: [*norm_plan.get(rid, []), *spectral_plan.get(rid, [])]
            for rid in sorted({*norm_plan, *spectral_plan})}
    return load_metric_histories(plan, tracking_uri)


@dataclass
class Reads:
    """Everything read from the store for one report."""

    sweep: Sweep
    fronts: frontier_.Frontiers
    profiles: pd.DataFrame  # the gradient profiles the figures draw
    n_profiled: int  # runs with a grad_profile.csv
    by_gap_raw: pd.DataFrame  # eval_by_gap.csv of every run that has one
    histories: pd.DataFrame
    card: claims.Scorecard | None


def read(experiment: str, tracking_uri: str, pool: Sequence[str] = (),
         claims_path: Path | None = None) -> Reads:
    sweep = load_sweep(experiment, tracking_uri, pool)
    fronts = frontier_.load_frontiers(sweep, tracking_uri)
    return Reads(
        sweep=sweep,
        fronts=fronts,
        profiles=load_drawn_profiles(sweep.runs, tracking_uri,
                                     frontier_grads.level_runs(fronts)[RUN_ID]),
        n_profiled=len(artifact_runs(sweep.runs, names.GRAD_PROFILE_ARTIFACT, tracking_uri)),
        by_gap_raw=load_eval_by_gap(sweep.runs, tracking_uri),
        histories=_histories(sweep, tracking_uri),
        card=claims.scorecard(experiment, sweep, tracking_uri, claims_path),
    )


class Inputs:
    """One report's reads and the tables derived from them (each computed on first use)."""

    def __init__(self, experiment: str, tracking_uri: str, reads: Reads) -> None:
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        self.reads = reads
        self.sweep = reads.sweep
        self.runs = reads.sweep.runs
        self.finals = reads.sweep.finals
        self.fronts = reads.fronts
        self.profiles = reads.profiles
        self.card = reads.card
        # every run of one experiment carries its id: the MLflow UI's links need it
        self.experiment_id = str(self.runs[EXPERIMENT_ID].iloc[0])

    # --- style: the same colour and marker for a configuration in every figure -------------
    @cached_property
    def colors(self) -> dict[str, str]:
        return plotting.label_colors(self.runs)

    @cached_property
    def markers(self) -> dict[str, str]:
        return plotting.label_markers(self.runs)

    @property
    def style(self) -> tuple[dict[str, str], dict[str, str], str]:
        """(colors, markers, experiment): the leading arguments of most drawing functions."""
        return self.colors, self.markers, self.experiment

    # --- results -------------------------------------------------------------------------
    @cached_property
    def view(self) -> overview.Overview:
        return overview.overview(self.sweep)

    @cached_property
    def counts(self) -> pd.DataFrame:
        return tables.status_counts(self.runs)

    @cached_property
    def configs(self) -> pd.DataFrame:
        """One row per (task, label): plain name, lr, hidden size, parameter count."""
        return configs.configurations(self.runs, self.sweep.params, self.sweep.label_axes)

    @cached_property
    def answers(self) -> pd.DataFrame:
        """Which gap each configuration holds, by one rule (`held`), with its plain name."""
        return configs.named(held.held_table(self.runs, self.fronts), self.configs)

    @cached_property
    def name_of(self) -> dict[tuple[str, str], str]:
        """Each (task, label)'s plain name: its answer's, else (the learning-rate choice's
        probes at a rate it did not choose) its short name and lr."""
        out = {(str(c[names.TASK_LABEL]), str(c[LABEL])):
               f"{c[configs.SHORT_NAME]}, lr {configs.lr_text(c[names.LR])}"
               if configs.lr_text(c[names.LR]) else str(c[configs.SHORT_NAME])
               for c in self.configs.to_dict("records")}
        out.update({(str(a[names.TASK_LABEL]), str(a[LABEL])): str(a[configs.NAME])
                    for a in self.answers.to_dict("records")})
        return out

    @cached_property
    def rules(self) -> dict[str, str]:
        """Each frontier sweep's `frontier_rule` tag, by the sweep's run name."""
        return dict(self.fronts.rules)

    @cached_property
    def found(self) -> list[findings_.Finding]:
        return findings_.findings(self.runs, self.answers, self.rules, self.name_of)

    @cached_property
    def solved(self) -> pd.DataFrame:
        """Per (task, label): the gap held by the rule it was decided by (`answers`), then the
        every-seed view (`tables.largest_solved_gap`), labelled as such on the page."""
        return held.with_every_seed(self.answers, tables.largest_solved_gap(self.runs),
                                    self.rules)

    @cached_property
    def accuracy(self) -> pd.DataFrame:
        return tables.accuracy_by_gap(self.runs)

    @cached_property
    def vgaps(self) -> variable_gap.VariableGaps:
        return variable_gap.variable_gap_frontier(self.runs, self.sweep.params,
                                                  self.reads.by_gap_raw)

    @cached_property
    def lead(self) -> list[headline_.Lead]:
        vgaps = self.vgaps
        return headline_.headline(
            self.runs, self.answers, self.rules, self.name_of,
            {str(task): variable_gap.sentence(str(task), vgaps)
             for task in vgaps.table[names.TASK_LABEL].unique()})

    @cached_property
    def clipping(self) -> pd.DataFrame:
        """What clipping did, per (configuration, threshold) (`clip_effect`)."""
        return clip_effect.clipping_table(self.runs, self.answers, self.rules)

    @cached_property
    def n_clip_settings(self) -> int:
        return len(tables.clip_settings(self.runs))

    @cached_property
    def front_grads(self) -> frontier_grads.FrontierGradients | None:
        if self.fronts.empty:
            return None
        return frontier_grads.frontier_gradients(self.fronts, self.runs, self.finals,
                                                 self.profiles)

    # --- gradients -----------------------------------------------------------------------
    @cached_property
    def heatmap(self) -> pd.DataFrame:
        return gradients.heatmap_table(self.runs, self.profiles)

    @cached_property
    def decay_points(self) -> pd.DataFrame:
        return gradients.decay_points(self.runs, self.finals)

    @cached_property
    def decay(self) -> pd.DataFrame:
        return gradients.decay_table(self.decay_points)

    @cached_property
    def norms(self) -> pd.DataFrame:
        return gradients.grad_norm_table(self.runs, self.reads.histories)

    @cached_property
    def clip_points(self) -> pd.DataFrame:
        return gradients.clip_points(self.runs)

    @cached_property
    def clip_rates(self) -> pd.DataFrame:
        return gradients.clip_rate_table(self.clip_points)

    @cached_property
    def spectral(self) -> pd.DataFrame:
        return gradients.spectral_table(self.runs, self.finals, self.reads.histories)
