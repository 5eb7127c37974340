"""``merx compare``: what differed between runs, what it changed, and whether the change is real.

A comparison is made between *subjects*: single runs (``run12``) or groups of runs that differ
only by their seed (same ``group_hash``). :func:`resolve_subjects` turns what the user typed
into subjects; :func:`compare` builds one plain, JSON-ready dict holding everything the
terminal view shows (``--json`` prints that dict); :func:`render` draws it with rich.

Against the first subject, every other one gets:

* the flattened config keys whose values differ (all keys with ``show_all``), and the data,
  plugin, library and code differences;
* its test metrics with the difference to the first, its baselines, best epoch, epochs run
  and wall time; for a group, mean ± std and a t-based 95 % interval per metric;
* a paired test: for two runs evaluated on the same test songs, a paired bootstrap interval
  and p-value of each metric difference and McNemar's test on the (implied) quadrant; for two
  groups, a t-test across seeds (:mod:`merx.stats`);
* for every test, whether it is the confirmatory test of the primary metric or an exploratory
  one, Holm-adjusted with all the others (:mod:`merx.compare.family`).

The work is split by job: :mod:`~merx.compare.subjects` (what was typed -> subjects),
:mod:`~merx.compare.diffs` (config and provenance), :mod:`~merx.compare.scores` (metrics,
baselines, training), :mod:`~merx.compare.paired` (the tests), :mod:`~merx.compare.family`
(confirmatory or exploratory, and the verdicts), :mod:`~merx.compare.render`.
"""

from __future__ import annotations

from merx.compare.diffs import config_differences, provenance_differences
from merx.compare.family import ALPHA, judge
from merx.compare.paired import paired_group_test, paired_run_test, song_metric
from merx.compare.render import format_summary, render, titled_table
from merx.compare.scores import (
    CONFIRMATORY,
    DEFAULT_TESTED,
    DERIVED,
    baseline_table,
    metric_table,
    primary_candidates,
    primary_metric,
    training_table,
)
from merx.compare.subjects import MIN_HASH_PREFIX, Subject, group_label, resolve_subjects, subjects_from_runs
from merx.errors import CompareError
from merx.metrics import metric
from merx.store.ids import format_run_id

__all__ = ["ALPHA", "CONFIRMATORY", "DEFAULT_TESTED", "MIN_HASH_PREFIX", "CompareError", "Subject", "baseline_table",
           "compare", "config_differences", "format_summary", "group_label", "metric_table",
           "paired_group_test", "paired_run_test", "primary_metric", "provenance_differences", "render",
           "resolve_primary", "resolve_subjects", "song_metric", "subjects_from_runs", "titled_table",
           "training_table"]


def resolve_primary(primary: str | None, tasks: set[str], first_task: str) -> str:
    """The primary metric's name: ``primary`` checked against the metrics of ``tasks``, or the
    first subject's task's :data:`CONFIRMATORY` metric."""
    if primary is None:
        return CONFIRMATORY[first_task]
    rec = metric(primary)
    allowed = primary_candidates(tasks)
    if rec is None or rec.name not in allowed:
        known = "" if rec is None else f" ({rec.name} is a {rec.task} metric)" if rec.task != "any" else \
            f" ({rec.name} does not score the predictions)"
        raise CompareError(f"cannot use {primary!r} as the primary metric{known}; for {' and '.join(sorted(tasks))} "
                           f"runs choose one of {', '.join(allowed)}")
    return rec.name


def compare(store, subjects: list[Subject], show_all: bool = False, metrics: list[str] | None = None,
            n_resamples: int = 2000, seed: int = 0, primary: str | None = None) -> dict:
    """Everything ``merx compare`` shows, as a JSON-ready dict (see the module docstring).

    ``primary`` names the metric whose test is confirmatory (default: macro-F1 for
    classification, ``va_mae`` for regression); every other test is exploratory and
    Holm-adjusted (:mod:`merx.compare.family`). It is tested even when ``metrics`` leaves it out."""
    if not subjects:
        raise CompareError("nothing to compare: name runs (run12), groups (name@3f2a), experiments or tag:NAME")
    if len(subjects) == 1 and not subjects[0].is_group:
        raise CompareError(f"compare needs two runs or a group of several seeds; got only {subjects[0].label} "
                           f"(from {subjects[0].origin!r})")
    mode = "groups" if any(s.is_group for s in subjects) else "runs"
    notes = []
    for s in subjects:
        for r in s.runs:
            if r["status"] != "completed":
                notes.append(f"{format_run_id(r['id'])} is {r['status']}: it has no test metrics"
                             + (f" ({r['error']})" if r.get("error") else ""))
    tasks = {s.config["task"] for s in subjects}
    if len(tasks) > 1:
        notes.append("the subjects do not share a task (regression vs classification): only common metrics line up")
    primary = resolve_primary(primary, tasks, subjects[0].config["task"])
    metric_rows = metric_table(subjects, extra=list(DERIVED))
    tested = metrics or list(dict.fromkeys(m for s in subjects for m in DEFAULT_TESTED[s.config["task"]]))
    unknown = [m for m in tested if m not in metric_rows]
    if metrics and unknown:
        raise CompareError(f"no test metric {', '.join(map(repr, unknown))} in these runs; they have "
                           f"{', '.join(metric_rows)}")
    # The primary is tested even when its stored value is missing: per-song tests recompute it
    # from the predictions, and a pair that cannot test it says so.
    tested = [primary] + [m for m in tested if m in metric_rows and m != primary]
    tests = []
    for other in subjects[1:]:
        if mode == "runs":
            tests.append(paired_run_test(store, subjects[0].runs[0], other.runs[0], tested, n_resamples, seed))
        else:
            tests.append(paired_group_test(subjects[0], other, tested))
    multiple_testing = judge(tests, primary, ALPHA)
    from merx.data.songs import TRUTH

    return {
        "mode": mode,
        "primary_metric": primary,
        # What every metric and baseline of each task is scored against (one truth per task).
        "truth": {task: TRUTH[task] for task in sorted(tasks)},
        "subjects": [{"label": s.label, "runs": [format_run_id(i) for i in s.ids],
                      "experiment": s.runs[0]["experiment"], "group_hash": s.group_hash,
                      "seeds": [r["seed"] for r in s.runs],
                      "task": s.config["task"], "statuses": [r["status"] for r in s.runs], "origin": s.origin}
                     for s in subjects],
        "config": config_differences(subjects, show_all),
        "provenance": provenance_differences(store, subjects, show_all),
        "metrics": metric_rows,
        "baselines": baseline_table(subjects, list(metric_rows) if show_all else tested),
        "training": training_table(subjects),
        "tested_metrics": tested,
        "multiple_testing": multiple_testing,
        "tests": tests,
        "notes": notes,
    }
