"""``merx report``: PNG plots of a run (or a group of seeds) and an HTML page tying them together.

* ``learning_curves.png``: train and validation loss, the monitored validation metric, the
  learning rate of each part, and the gradient norm before clipping, with the best epoch marked;
* ``confusion_matrix.png``: true against predicted quadrant (implied by V/A in a regression run);
* ``va_scatter.png`` (regression): predicted against true valence and arousal, and the V/A
  plane, with the quadrant lines at 0.5 and MERGE's 0.4–0.6 hole shaded;
* ``index.html``: what ran, the test metrics beside the baselines, the plots and the config.

A group's report overlays one curve per seed, sums the confusion matrices and pools the
predictions of all its runs. Plots are drawn with matplotlib's object API on the Agg canvas
(no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from merx.data.songs import HOLE, QUADRANTS

_Q_COLOURS = {"Q1": "#d62728", "Q2": "#9467bd", "Q3": "#1f77b4", "Q4": "#2ca02c"}


@dataclass
class Report:
    """The files a report wrote: ``plots`` by name, and the HTML page."""

    out_dir: Path
    html: Path
    plots: dict[str, Path] = field(default_factory=dict)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _series(run: dict, key: str) -> tuple[list[int], list[float]]:
    epochs = run.get("epochs") or {}
    xs = sorted(int(e) for e in epochs)
    pts = [(e, epochs.get(e, epochs.get(str(e), {})).get(key)) for e in xs]
    pts = [(e, v) for e, v in pts if v is not None]
    return [e for e, _ in pts], [v for _, v in pts]


def _monitored(run: dict) -> str:
    from merx.compare import primary_metric

    monitor = run["config"]["train"]["early_stopping"]["monitor"]
    # val_loss already has its own panel: show the task's headline metric instead.
    return monitor if monitor != "val_loss" else f"val_{primary_metric(run['config'])}"


def learning_curves(runs: list[dict]):
    """2 × 2 panels: losses, monitored metric, learning rates, gradient norm; best epoch dotted."""
    fig = _figure(11, 7.5)
    axes = fig.subplots(2, 2)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    monitor = _monitored(runs[0])
    label_of = (lambda r: f"run{r['id']} (seed {r['seed']})") if len(runs) > 1 else (lambda r: f"run{r['id']}")
    for run, colour in zip(runs, colours, strict=True):
        name = label_of(run)
        ax = axes[0, 0]
        ax.plot(*_series(run, "train_loss"), color=colour, label=f"{name} train")
        ax.plot(*_series(run, "val_loss"), color=colour, linestyle="--", label=f"{name} validation")
        axes[0, 1].plot(*_series(run, monitor), color=colour, marker="o", markersize=3, label=name)
        lr_keys = sorted({k for e in (run.get("epochs") or {}).values() for k in e if k.startswith("lr_")})
        for j, key in enumerate(lr_keys):
            axes[1, 0].plot(*_series(run, key), color=colour, linestyle=["-", "--", ":", "-."][j % 4],
                            label=f"{name} {key[3:]}" if len(runs) > 1 else key[3:])
        axes[1, 1].plot(*_series(run, "grad_norm_pre_clip"), color=colour, label=f"{name} before clipping")
        if run.get("best_epoch"):
            for ax in axes.flat:
                ax.axvline(run["best_epoch"], color=colour, linestyle=":", linewidth=1)
    clip = runs[0]["config"]["train"].get("grad_clip") or 0
    if clip > 0:
        axes[1, 1].axhline(clip, color="grey", linestyle="--", linewidth=1, label=f"clip at {clip:g}")
    titles = [("loss (solid: train, dashed: validation)", "loss"),
              (f"{monitor}" + (" (monitored)" if monitor == runs[0]["config"]["train"]["early_stopping"]["monitor"]
                               else ""), monitor),
              ("learning rate per part", "learning rate"),
              ("gradient norm (mean per epoch, before clipping)", "L2 norm")]
    from matplotlib.ticker import MaxNLocator

    for ax, (title, ylabel) in zip(axes.flat, titles, strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if any(v for ax in [axes[1, 0]] for line in ax.get_lines() for v in line.get_ydata() if v):
        axes[1, 0].set_yscale("log")
    fig.suptitle(_figure_text(_title(runs)) + " — dotted: best epoch (weights restored for the test)", fontsize=11)
    return fig


def _figure_text(text: str) -> str:
    """User text for a matplotlib label: a pair of ``$`` would start mathtext, which draws
    ``$x$`` as math and fails on ``$\\foo$``; control characters have no glyph."""
    from merx.commands.output import clean

    return clean(text).replace("$", r"\$")


def _title(runs: list[dict]) -> str:
    r = runs[0]
    if len(runs) == 1:
        return f"run{r['id']} {r['experiment']}"
    return f"{r['experiment']}: {len(runs)} runs (seeds {', '.join(str(x['seed']) for x in runs)})"


def confusion_figure(predictions: list[dict], regression: bool, n_runs: int = 1):
    """Counts of true (rows) against predicted (columns) quadrant, with each row's share."""
    from merx.metrics import classification_metrics, confusion_matrix

    true = [p["true_quadrant"] for p in predictions]
    pred = [p["pred_quadrant"] for p in predictions]
    m = np.asarray(confusion_matrix(true, pred))
    scores = classification_metrics(true, pred)
    fig = _figure(5.6, 5)
    ax = fig.subplots()
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(QUADRANTS)):
        for j in range(len(QUADRANTS)):
            ax.text(j, i, f"{m[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(4), QUADRANTS)
    ax.set_yticks(range(4), QUADRANTS)
    ax.set_xlabel("predicted quadrant" + (" (implied by predicted V/A)" if regression else ""))
    ax.set_ylabel("true quadrant")
    fig.colorbar(image, ax=ax, label="share of the true quadrant's songs", shrink=0.8)
    pooled = f", {n_runs} runs pooled" if n_runs > 1 else ""
    ax.set_title(f"{len(true)} test songs{pooled}: accuracy {scores['accuracy']:.3f}, macro-F1 "
                 f"{scores['macro_f1']:.3f}", fontsize=10)
    return fig


def va_scatter(predictions: list[dict], n_runs: int = 1):
    """Predicted against true valence and arousal, and the V/A plane (true → predicted)."""
    rows = [p for p in predictions if p.get("pred_valence") is not None and p.get("true_valence") is not None]
    tv = np.array([p["true_valence"] for p in rows])
    ta = np.array([p["true_arousal"] for p in rows])
    pv = np.array([p["pred_valence"] for p in rows])
    pa = np.array([p["pred_arousal"] for p in rows])
    colours = [_Q_COLOURS.get(p["true_quadrant"], "black") for p in rows]
    fig = _figure(15, 5.6)
    axes = fig.subplots(1, 3)
    for ax, (name, t, p) in zip(axes[:2], (("valence", tv, pv), ("arousal", ta, pa)), strict=True):
        ax.axvspan(*HOLE, color="grey", alpha=0.18, lw=0, label="hole: no true values 0.4–0.6")
        ax.axhspan(*HOLE, color="orange", alpha=0.10, lw=0, label="predictions inside the hole")
        ax.axvline(0.5, color="black", linewidth=0.8)
        ax.axhline(0.5, color="black", linewidth=0.8)
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect prediction")
        ax.scatter(t, p, c=colours, s=16, alpha=0.8, edgecolors="none")
        mae = float(np.mean(np.abs(t - p))) if len(t) else float("nan")
        ax.set_title(f"{name}: predicted vs true (MAE {mae:.3f})", fontsize=10)
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.legend(fontsize=7, loc="upper left")
    ax = axes[2]
    for lo_hi, span in ((HOLE, ax.axvspan), (HOLE, ax.axhspan)):
        span(*lo_hi, color="grey", alpha=0.18, lw=0)
    ax.axvline(0.5, color="black", linewidth=0.8)
    ax.axhline(0.5, color="black", linewidth=0.8)
    for x0, y0, x1, y1, c in zip(tv, ta, pv, pa, colours, strict=True):
        ax.plot([x0, x1], [y0, y1], color=c, alpha=0.25, linewidth=0.7)
    ax.scatter(tv, ta, facecolors="none", edgecolors=colours, s=22, label="true (hollow)")
    ax.scatter(pv, pa, c=colours, s=14, label="predicted (filled)")
    for q, (x, y) in {"Q1": (0.97, 0.97), "Q2": (0.03, 0.97), "Q3": (0.03, 0.03), "Q4": (0.97, 0.03)}.items():
        ax.text(x, y, q, transform=ax.transAxes, ha="right" if x > 0.5 else "left",
                va="top" if y > 0.5 else "bottom", color=_Q_COLOURS[q], fontsize=12, fontweight="bold")
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")
    ax.set_title("V/A plane: each song's true point → prediction (grey: the hole)", fontsize=10)
    # Below the plane: inside it the legend would hide songs or the quadrant names.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    lo = min(0.0, *(x.min() for x in (tv, ta, pv, pa) if len(x)))
    hi = max(1.0, *(x.max() for x in (tv, ta, pv, pa) if len(x)))
    for a in axes:
        a.set_xlim(lo - 0.02, hi + 0.02)
        a.set_ylim(lo - 0.02, hi + 0.02)
        a.set_aspect("equal")
    pooled = f" ({n_runs} runs pooled)" if n_runs > 1 else ""
    fig.suptitle(f"{len(rows)} test predictions{pooled}; colour = true quadrant", fontsize=11)
    return fig


# -- the page -------------------------------------------------------------------------------

def _metrics_html(runs: list[dict]) -> str:
    from merx.compare import Subject, baseline_table, format_summary, metric_table

    subject = Subject("model", runs, runs[0]["group_hash"])
    metrics = metric_table([subject])
    baselines = baseline_table([subject], list(metrics))
    names = list(baselines)
    head = "".join(f"<th>{html.escape(b)}</th>" for b in names)
    rows = []
    for m, row in metrics.items():
        cells = "".join(f"<td>{'-' if baselines[b].get(m, [None])[0] is None else f'{baselines[b][m][0]:.4f}'}</td>"
                        for b in names)
        rows.append(f"<tr><th>{html.escape(m)}</th><td class=model>{html.escape(format_summary(row['subjects'][0]))}"
                    f"</td>{cells}</tr>")
    what = "mean ± std [95 % t interval] over the runs" if len(runs) > 1 else "the run"
    return (f"<table><caption>test metrics ({what}) beside baselines fitted on the training split</caption>"
            f"<tr><th>metric</th><th>model</th>{head}</tr>{''.join(rows)}</table>")


def _page(runs: list[dict], plots: dict[str, tuple[Path, str]], notes: list[str]) -> str:
    from merx.config import to_toml

    r = runs[0]
    e = html.escape
    facts = [("experiment", r["experiment"]), ("task", r["task"]),
             ("runs", ", ".join(f"run{x['id']} (seed {x['seed']}, {x['status']})" for x in runs)),
             ("group hash", r["group_hash"]), ("best epoch / epochs run",
                                               ", ".join(f"{x.get('best_epoch')}/{x.get('epochs_run')}" for x in runs)),
             ("wall time (s)", ", ".join(f"{x.get('wall_seconds') or 0:.1f}" for x in runs)),
             ("device", ", ".join(sorted({x.get('device') or '-' for x in runs}))),
             ("git commit", ", ".join(sorted({x.get('git_commit') or '-' for x in runs}))),
             ("tags", ", ".join(sorted({t for x in runs for t in (x.get("tags") or [])})) or "-")]
    if r.get("description"):
        facts.insert(1, ("description", r["description"]))
    if any(x.get("note") for x in runs):
        facts.append(("notes", " | ".join(f"run{x['id']}: {x['note']}" for x in runs if x.get("note"))))
    fact_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts)
    figures = "".join(f'<figure><img src="{e(path.name)}" alt="{e(name)}"><figcaption>{e(caption)}</figcaption>'
                      f"</figure>" for name, (path, caption) in plots.items())
    note_html = "".join(f"<p class=note>{e(n)}</p>" for n in notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>merx report: {e(_title(runs))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} caption {{ text-align: left; font-weight: bold; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }} th {{ text-align: left; }}
td.model {{ font-weight: bold; color: #116611; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ color: #555; }} pre {{ background: #f6f6f6; padding: 1em; }} .note {{ color: #a60; }}
</style></head><body>
<h1>{e(_title(runs))}</h1>
<table>{fact_rows}</table>
{_metrics_html(runs)}
{note_html}
{figures}
<h2>config</h2><pre>{e(to_toml(r['config']))}</pre>
<p><small>written by merx report</small></p>
</body></html>
"""


def write_report(store, runs: list[dict], out_dir: str | Path) -> Report:
    """Write the plots and ``index.html`` for ``runs`` (one run, or a group) into ``out_dir``."""
    if not runs:
        raise ValueError("write_report needs at least one run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = sorted(runs, key=lambda r: r["id"])
    regression = runs[0]["task"] == "regression"
    plots: dict[str, tuple[Path, str]] = {}
    notes: list[str] = []

    def save(name, fig, caption):
        path = out / f"{name}.png"
        fig.savefig(path)
        plots[name] = (path, caption)

    if any(r.get("epochs") for r in runs):
        save("learning_curves", learning_curves(runs),
             "Learning curves: training and validation loss, the monitored validation metric, the learning rate "
             "of each part and the gradient norm before clipping. Dotted lines: the best epoch, whose weights "
             "were restored for the test.")
    else:
        notes.append("no epoch was recorded: no learning curves")
    predictions = [p for r in runs for p in store.get_predictions(r["id"], "test")]
    if predictions:
        save("confusion_matrix", confusion_figure(predictions, regression, len(runs)),
             "Confusion matrix of the test songs: rows are the true quadrant, columns the predicted one"
             + (" (implied by the predicted valence and arousal, thresholds at 0.5)." if regression else "."))
        if regression:
            save("va_scatter", va_scatter(predictions, len(runs)),
                 "Predicted against true valence and arousal, and each song's move from its true point to its "
                 "prediction on the V/A plane. Lines at 0.5 separate the quadrants; grey bands are MERGE's hole "
                 "(no song has a true value in 0.4–0.6), orange bands predictions that fall inside it.")
        else:
            notes.append("classification run: no valence/arousal predictions to scatter")
    else:
        notes.append("no test predictions were recorded (did the run finish?): no confusion matrix or scatter")
    page = out / "index.html"
    page.write_text(_page(runs, plots, notes), encoding="utf-8")
    return Report(out, page, {k: v[0] for k, v in plots.items()})
