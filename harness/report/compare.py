"""Two experiments side by side (`harness-report --experiment A --compare B`): counts,
accuracy vs gap of both in one figure, the largest solved gap of both with the difference,
and findings of what changed. Written to `reports/A_vs_B/`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness import names
from harness.report import criteria, findings, page, plotting, tables
from harness.report.load import LABEL, load_sweep

EXPERIMENT = "experiment"
COUNTS_CSV = "runs_by_status.csv"
ACCURACY_CSV = "accuracy_by_gap.csv"
ACCURACY_PNG = "accuracy_vs_gap.png"
SOLVED_CSV = "largest_solved_gap.csv"
FINDINGS_CSV = "findings.csv"
SUMMARY_MD = "summary.md"
INDEX_HTML = "index.html"
CHANGE = "change"
LINESTYLES = ("-", "--")  # A solid, B dashed


def folder_name(a: str, b: str) -> str:
    return f"{page.experiment_folder(a)}_vs_{page.experiment_folder(b)}"


def _counts(a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str) -> pd.DataFrame:
    ca, cb = tables.status_counts(a), tables.status_counts(b)
    merged = ca.merge(cb, on=names.STATUS, how="outer", suffixes=("_a", "_b")).fillna(0)
    order = list(dict.fromkeys([*ca[names.STATUS], *cb[names.STATUS]]))
    merged = merged.set_index(names.STATUS).reindex(order).reset_index()
    table = pd.DataFrame({names.STATUS: merged[names.STATUS],
                          name_a: merged[f"{tables.RUNS}_a"].astype(int),
                          name_b: merged[f"{tables.RUNS}_b"].astype(int)})
    table[CHANGE] = table[name_b] - table[name_a]
    return table


def _gap_value(cell: object) -> int | None:
    return None if cell == tables.NONE or cell is None else int(cell)  # type: ignore[arg-type]


def _solved(a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str) -> pd.DataFrame:
    key = [names.TASK_LABEL, LABEL]
    cols = [tables.LARGEST_SOLVED_GAP, tables.LARGEST_SOLVED_GAP_PER_SEED]
    # As text ("20", "none") so a side without "none" does not turn 20 into 20.0 on merging.
    sa = tables.largest_solved_gap(a)[[*key, *cols]].astype({c: str for c in cols})
    sb = tables.largest_solved_gap(b)[[*key, *cols]].astype({c: str for c in cols})
    merged = sa.merge(sb, on=key, how="outer", suffixes=(f" ({name_a})", f" ({name_b})"))
    merged = merged.sort_values(key, kind="mergesort").reset_index(drop=True)
    gap_a, gap_b = (f"{tables.LARGEST_SOLVED_GAP} ({n})" for n in (name_a, name_b))
    changes = []
    for va, vb in zip(merged[gap_a], merged[gap_b], strict=True):
        if pd.isna(va) or pd.isna(vb):
            changes.append("only in " + (name_b if pd.isna(va) else name_a))
            continue
        ga, gb = _gap_value(va), _gap_value(vb)
        if ga is not None and gb is not None:
            changes.append(f"{gb - ga:+d}")
        else:
            changes.append("0" if ga == gb else f"{tables.NONE if ga is None else ga} → "
                           f"{tables.NONE if gb is None else gb}")
    merged[CHANGE] = changes
    return merged.astype(object).where(merged.notna(), "–")


def _changed(a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str,
             counts: pd.DataFrame) -> list[findings.Finding]:
    out = []
    solved = counts.set_index(names.STATUS)
    parts = [f"{s} {int(solved.loc[s, name_a])} → {int(solved.loc[s, name_b])}"
             for s in (names.SOLVED, names.UNSOLVED, names.DIVERGED) if s in solved.index]
    out.append(findings.Finding("counts", "", f"Runs {len(a)} in {name_a}, {len(b)} in "
                                              f"{name_b}; by status: {', '.join(parts)}."))
    tasks = sorted(set(a[names.TASK_LABEL].dropna()) | set(b[names.TASK_LABEL].dropna()))
    for task in tasks:
        at_a, at_b = a[a[names.TASK_LABEL] == task], b[b[names.TASK_LABEL] == task]
        labels = sorted(set(at_a[LABEL]) | set(at_b[LABEL]))
        for label in labels:
            ra, rb = at_a[at_a[LABEL] == label], at_b[at_b[LABEL] == label]
            if ra.empty or rb.empty:
                where = name_b if ra.empty else name_a
                out.append(findings.Finding("only_one", task, f"{label} ran on {task} only in "
                                                              f"{where}."))
                continue
            # the task's own criterion: accuracy, or normalized MSE for a regression task
            measure = criteria.measure(pd.concat([at_a, at_b]))
            xa, xb = (findings.result(r, label, measure) for r in (ra, rb))
            text = (f"{label} on {task}: largest gap solved in every seed "
                    f"{findings.gap_text(xa.largest)} in {name_a}, "
                    f"{findings.gap_text(xb.largest)} in {name_b}")
            means = findings.shared_means(xa, xb)
            if means:
                n, ma, mb = means
                text += (f"; mean {measure.name} over the {n} shared gap(s) "
                         f"{measure.text(ma)} → {measure.text(mb)} ({mb - ma:+.3f})")
            if xa.diverged or xb.diverged:
                text += f"; diverged runs {xa.diverged} → {xb.diverged}"
            kind = "changed" if (xa.largest != xb.largest) else "unchanged"
            out.append(findings.Finding(kind, task, text + "."))
    return out


def _accuracy_figure(acc: pd.DataFrame, runs: dict[str, pd.DataFrame], colors: dict[str, str],
                     markers: dict[str, str], title: str, path: Path) -> None:
    tasks = sorted(acc[names.TASK_LABEL].unique())
    n = max(len(tasks), 1)
    fig = Figure(figsize=(4.8 * n + 2.6, 4.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    seen: set[str] = set()
    mean = f"{names.FINAL_EVAL_ACCURACY}_mean"
    for ax, task in zip(axes, tasks, strict=False):
        for style, (name, at_exp) in zip(LINESTYLES, runs.items(), strict=False):
            panel = acc[(acc[names.TASK_LABEL] == task) & (acc[EXPERIMENT] == name)
                        & acc[mean].notna()]
            seen.update(plotting.ci_lines(ax, panel, names.GAP, colors, markers, mean=mean,
                                         linestyle=style))
            plotting.draw_chance(ax, at_exp[at_exp[names.TASK_LABEL] == task])
        plotting.gap_axis(ax, acc.loc[acc[names.TASK_LABEL] == task, names.GAP].astype(float)
                          .to_numpy())
        plotting.share_panel(ax, task, "gap (time steps)", plotting.ACCURACY_AXIS)
    if not tasks:
        plotting.empty_panel(axes[0], "no runs with a task")
    fig.suptitle(f"{title}: final eval accuracy vs gap\n{plotting.CI_TEXT}")
    extra = [Line2D([], [], color="0.3", ls=style, label=f"experiment {name}")
             for style, name in zip(LINESTYLES, runs, strict=False)]
    extra.append(Line2D([], [], **plotting.CHANCE_STYLE, label=plotting.CHANCE_HANDLE_LABEL))
    plotting.add_legend(fig, sorted(seen), colors, markers, extra)
    plotting.save_png(fig, path)


def build_comparison(a: str, b: str, tracking_uri: str, out_root: Path = Path("reports")) -> Path:
    """Write the comparison of experiments `a` and `b` to `out_root/<a>_vs_<b>/`.

    Raises `ReportError` if the store or either experiment cannot be reported on.
    """
    sweep_a, sweep_b = load_sweep(a, tracking_uri), load_sweep(b, tracking_uri)
    runs = {a: sweep_a.runs, b: sweep_b.runs}
    out = Path(out_root) / folder_name(a, b)
    out.mkdir(parents=True, exist_ok=True)
    both = pd.concat([sweep_a.runs, sweep_b.runs], ignore_index=True)
    colors, markers = plotting.label_colors(both), plotting.label_markers(both)

    counts = _counts(sweep_a.runs, sweep_b.runs, a, b)
    acc = pd.concat([tables.accuracy_by_gap(r).assign(**{EXPERIMENT: name})
                     for name, r in runs.items()], ignore_index=True)
    acc = acc[[EXPERIMENT, *[c for c in acc.columns if c != EXPERIMENT]]]
    solved = _solved(sweep_a.runs, sweep_b.runs, a, b)
    changed = _changed(sweep_a.runs, sweep_b.runs, a, b, counts)
    for frame, name in ((counts, COUNTS_CSV), (acc, ACCURACY_CSV), (solved, SOLVED_CSV),
                        (findings.frame(changed), FINDINGS_CSV)):
        tables.write_csv(frame, out / name)
    _accuracy_figure(acc, runs, colors, markers, f"{a} (solid) vs {b} (dashed)",
                     out / ACCURACY_PNG)

    summary = "\n".join([
        f"# Comparison: {a} vs {b}", "", f"- store: `{tracking_uri}`",
        f"- full reports: `harness-report --experiment {a}`, `harness-report --experiment {b}`",
        "", "## Runs by status", "",
        tables.markdown_table(list(counts.columns), tables.display_rows(counts)), "",
        "## What changed", "", *[f"- {f.text}" for f in changed], "",
        "## Largest solved gap", "",
        tables.markdown_table(list(solved.columns), tables.display_rows(solved)), "",
    ])
    (out / SUMMARY_MD).write_text(summary, encoding="utf-8", newline="\n")
    html = page.render_html({
        "a": a, "b": b, "tracking_uri": tracking_uri,
        "counts_header": list(counts.columns), "counts_rows": tables.display_rows(counts),
        "findings": changed, "accuracy_png": page.data_uri(out / ACCURACY_PNG),
        "solved_header": list(solved.columns), "solved_rows": tables.display_rows(solved),
        "files": [ACCURACY_CSV, ACCURACY_PNG, COUNTS_CSV, FINDINGS_CSV, SOLVED_CSV,
                  SUMMARY_MD],
    }, template="compare.html")
    index = out / INDEX_HTML
    index.write_text(html, encoding="utf-8", newline="\n")
    return index
