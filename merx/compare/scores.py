"""What each subject scored: test metrics (mean ± std and interval over a group's seeds), the
baselines, and the training numbers."""

from __future__ import annotations

from merx.compare.subjects import Subject
from merx.metrics import DEFAULT_PRIMARY, headline_metrics, higher_is_better, metric_names
from merx.metrics import metric as metric_record

#: Metrics tested by default (those a run of the task has).
DEFAULT_TESTED = {task: headline_metrics(task) for task in ("classification", "regression")}


def primary_metric(cfg: dict) -> str:
    """The metric a run is judged by: the test counterpart of the monitored validation metric,
    else macro-F1 (classification) or the implied quadrants' macro-F1 (regression)."""
    watched = metric_record(cfg["train"]["early_stopping"]["monitor"])
    if watched is not None and watched.task != "any":
        return watched.name
    return DEFAULT_PRIMARY[cfg["task"]]


def _metric_order(subjects: list[Subject]) -> list[str]:
    tasks = list(dict.fromkeys(s.config["task"] for s in subjects))
    names = [m for task in tasks for m in metric_names(task)]
    present = {m for s in subjects for r in s.runs for m in ((r.get("metrics") or {}).get("test") or {})}
    ordered = [m for m in dict.fromkeys(names) if m in present]
    return ordered + sorted(present - set(ordered))


def _summary(values: list) -> dict:
    from merx.stats import summarize

    return summarize(values).to_dict()


def metric_table(subjects: list[Subject]) -> dict:
    """Per metric: a summary per subject (mean, std, n, interval, values) and mean - first's mean."""
    out = {}
    for metric in _metric_order(subjects):
        per = [_summary([((r.get("metrics") or {}).get("test") or {}).get(metric) for r in s.runs]) for s in subjects]
        base = per[0]["mean"]
        diffs = [None if p["mean"] is None or base is None else p["mean"] - base for p in per]
        diffs[0] = None
        out[metric] = {"subjects": per, "difference": diffs, "higher_is_better": higher_is_better(metric)}
    return out


def baseline_table(subjects: list[Subject], metrics: list[str]) -> dict:
    """``{baseline: {metric: [mean over the subject's runs]}}`` for ``metrics``."""
    names = list(dict.fromkeys(b for s in subjects for r in s.runs for b in (r.get("baselines") or {})))
    out: dict[str, dict[str, list]] = {}
    for b in names:
        for m in metrics:
            per = [_summary([((r.get("baselines") or {}).get(b) or {}).get(m) for r in s.runs])["mean"]
                   for s in subjects]
            if any(v is not None for v in per):
                out.setdefault(b, {})[m] = per
    return out


def training_table(subjects: list[Subject]) -> dict:
    out = {}
    for key in ("best_epoch", "epochs_run", "wall_seconds"):
        out[key] = [_summary([r.get(key) for r in s.runs]) for s in subjects]
    return out
