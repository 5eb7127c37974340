"""What each subject scored: test metrics (mean ± std and interval over a group's seeds), the
baselines, and the training numbers."""

from __future__ import annotations

from merx.compare.subjects import Subject
from merx.metrics import PRIMARY, headline_metrics, higher_is_better, metric_names, metrics_for
from merx.metrics import metric as metric_record

#: Metrics tested by default (those a run of the task has).
DEFAULT_TESTED = {task: headline_metrics(task) for task in ("classification", "regression")}

#: Metrics that runs recorded by an older merx lack but whose parts they stored: derived from
#: those (the mean of the two MAEs is the mean over songs of each song's mean error).
DERIVED = {"va_mae": ("valence_mae", "arousal_mae")}

#: The confirmatory metric per task (one home: :data:`merx.metrics.PRIMARY`).
CONFIRMATORY = PRIMARY


def primary_candidates(tasks) -> list[str]:
    """The metrics that may be the primary one for runs of ``tasks``, the defaults first: those
    the tasks report, and the derived ones."""
    names = [CONFIRMATORY[task] for task in sorted(tasks)]
    names += [m.name for task in sorted(tasks) for m in metrics_for(task)]
    return list(dict.fromkeys(names))


def value_of(stored: dict | None, name: str) -> float | None:
    """``stored[name]``, derived from its parts for a :data:`DERIVED` metric an older run lacks."""
    stored = stored or {}
    if name in stored or name not in DERIVED:
        return stored.get(name)
    parts = [stored.get(p) for p in DERIVED[name]]
    return None if any(v is None for v in parts) else sum(parts) / len(parts)


def stored_value(run: dict, name: str) -> float | None:
    """The run's test value of ``name`` (see :func:`value_of`)."""
    return value_of((run.get("metrics") or {}).get("test"), name)


def primary_metric(cfg: dict) -> str:
    """The metric a run is judged by: the test counterpart of the monitored validation metric,
    else macro-F1 (classification) or the implied quadrants' macro-F1 (regression)."""
    watched = metric_record(cfg["train"]["early_stopping"]["monitor"])
    if watched is not None and watched.task != "any":
        return watched.name
    return PRIMARY[cfg["task"]]


def _metric_order(subjects: list[Subject]) -> list[str]:
    tasks = list(dict.fromkeys(s.config["task"] for s in subjects))
    names = [m for task in tasks for m in metric_names(task)]
    present = {m for s in subjects for r in s.runs for m in ((r.get("metrics") or {}).get("test") or {})}
    ordered = [m for m in dict.fromkeys(names) if m in present]
    return ordered + sorted(present - set(ordered))


def _summary(values: list) -> dict:
    from merx.stats import summarize

    return summarize(values).to_dict()


def metric_table(subjects: list[Subject], extra: list[str] | tuple = ()) -> dict:
    """Per metric: a summary per subject (mean, std, n, interval, values) and mean - first's mean.

    ``extra`` names :data:`DERIVED` metrics to put first, where some subject has them."""
    out = {}
    for metric in [m for m in extra if any(stored_value(r, m) is not None for s in subjects for r in s.runs)] + [
            m for m in _metric_order(subjects) if m not in extra]:
        per = [_summary([stored_value(r, metric) for r in s.runs]) for s in subjects]
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
            per = [_summary([value_of((r.get("baselines") or {}).get(b), m) for r in s.runs])["mean"]
                   for s in subjects]
            if any(v is not None for v in per):
                out.setdefault(b, {})[m] = per
    return out


def training_table(subjects: list[Subject]) -> dict:
    out = {}
    for key in ("best_epoch", "epochs_run", "wall_seconds"):
        out[key] = [_summary([r.get(key) for r in s.runs]) for s in subjects]
    return out
