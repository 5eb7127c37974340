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
  of each metric difference and McNemar's test on the (implied) quadrant; for two groups, a
  t-test across seeds (:mod:`merx.stats`).

The work is split by job: :mod:`~merx.compare.subjects` (what was typed -> subjects),
:mod:`~merx.compare.diffs` (config and provenance), :mod:`~merx.compare.scores` (metrics,
baselines, training), :mod:`~merx.compare.paired` (the tests), :mod:`~merx.compare.render`.
"""

from __future__ import annotations

from merx.compare.diffs import config_differences, provenance_differences
from merx.compare.paired import paired_group_test, paired_run_test, song_metric
from merx.compare.render import format_summary, render, titled_table
from merx.compare.scores import DEFAULT_TESTED, baseline_table, metric_table, primary_metric, training_table
from merx.compare.subjects import (MIN_HASH_PREFIX, Subject, group_label, resolve_subjects,
                                   subjects_from_runs)
from merx.errors import CompareError
from merx.metrics import higher_is_better  # merx/cli.py still takes it from here; new code asks merx.metrics
from merx.store import format_run_id

__all__ = ["DEFAULT_TESTED", "MIN_HASH_PREFIX", "CompareError", "Subject", "baseline_table", "compare",
           "config_differences", "format_summary", "group_label", "higher_is_better", "metric_table",
           "paired_group_test", "paired_run_test", "primary_metric", "provenance_differences", "render",
           "resolve_subjects", "song_metric", "subjects_from_runs", "titled_table", "training_table"]


def compare(store, subjects: list[Subject], show_all: bool = False, metrics: list[str] | None = None,
            n_resamples: int = 2000, seed: int = 0) -> dict:
    """Everything ``merx compare`` shows, as a JSON-ready dict (see the module docstring)."""
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
    metric_rows = metric_table(subjects)
    tested = metrics or list(dict.fromkeys(m for s in subjects for m in DEFAULT_TESTED[s.config["task"]]))
    unknown = [m for m in tested if m not in metric_rows]
    if metrics and unknown:
        raise CompareError(f"no test metric {', '.join(map(repr, unknown))} in these runs; they have "
                           f"{', '.join(metric_rows)}")
    tested = [m for m in tested if m in metric_rows]
    tests = []
    for other in subjects[1:]:
        if mode == "runs":
            tests.append(paired_run_test(store, subjects[0].runs[0], other.runs[0], tested, n_resamples, seed))
        else:
            tests.append(paired_group_test(subjects[0], other, tested))
    return {
        "mode": mode,
        "subjects": [{"label": s.label, "runs": [format_run_id(i) for i in s.ids], "experiment": s.runs[0]["experiment"],
                      "group_hash": s.group_hash, "seeds": [r["seed"] for r in s.runs],
                      "task": s.config["task"], "statuses": [r["status"] for r in s.runs], "origin": s.origin}
                     for s in subjects],
        "config": config_differences(subjects, show_all),
        "provenance": provenance_differences(store, subjects, show_all),
        "metrics": metric_rows,
        "baselines": baseline_table(subjects, list(metric_rows) if show_all else tested),
        "training": training_table(subjects),
        "tested_metrics": tested,
        "tests": tests,
        "notes": notes,
    }
