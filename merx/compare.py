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
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from merx.data.songs import QUADRANTS
from merx.metrics import DEFAULT_PRIMARY, METRICS, headline_metrics, higher_is_better
from merx.metrics import metric as metric_record
from merx.store import RunNotFound, format_run_id, parse_run_id
from merx.errors import CompareError  # noqa: F401  (re-exported)

# ``higher_is_better`` is imported above for merx/cli.py, which still takes it from here; new
# code asks merx.metrics.

#: Metrics tested by default (those a run of the task has).
DEFAULT_TESTED = {task: headline_metrics(task) for task in ("classification", "regression")}
#: Text that cannot be a run id, a group or an experiment: ``@3f2a`` needs this many hex digits.
MIN_HASH_PREFIX = 4
_RUN_TOKEN = re.compile(r"(?:run)?\d+", re.IGNORECASE)
_HEX = re.compile(r"[0-9a-f]+")


def primary_metric(cfg: dict) -> str:
    """The metric a run is judged by: the test counterpart of the monitored validation metric,
    else macro-F1 (classification) or the implied quadrants' macro-F1 (regression)."""
    watched = metric_record(cfg["train"]["early_stopping"]["monitor"])
    if watched is not None and watched.task != "any":
        return watched.name
    return DEFAULT_PRIMARY[cfg["task"]]


# -- subjects -------------------------------------------------------------------------------

@dataclass
class Subject:
    """One side of a comparison: a run, or a group of runs that differ only by seed."""

    label: str
    runs: list[dict]  # RunStore.get_run dicts, oldest first
    group_hash: str
    origin: str = ""  # what the user typed

    @property
    def is_group(self) -> bool:
        return len(self.runs) > 1

    @property
    def config(self) -> dict:
        return self.runs[0]["config"]

    @property
    def ids(self) -> list[int]:
        return [r["id"] for r in self.runs]


def group_label(experiment: str, group_hash: str) -> str:
    """How a group is named: ``experiment@hash8``."""
    return f"{experiment}@{group_hash[:8]}"


def subjects_from_runs(runs: list[dict], origin: str = "") -> list[Subject]:
    """Group run dicts by ``group_hash`` (first appearance first); a group of one is labelled as its run."""
    by_group: dict[str, list[dict]] = {}
    for r in sorted(runs, key=lambda r: r["id"]):
        by_group.setdefault(r["group_hash"], []).append(r)
    out = []
    for gh, members in by_group.items():
        label = format_run_id(members[0]["id"]) if len(members) == 1 else group_label(members[0]["experiment"], gh)
        out.append(Subject(label, members, gh, origin))
    return out


def resolve_subjects(store, tokens: list[str]) -> list[Subject]:
    """Turn what the user typed into subjects.

    Each token is a run id (``run12``, ``12``), a group (``name@3f2a9c1d``, ``@3f2a``: a
    ``group_hash`` prefix, as ``merx runs`` and ``merx compare`` show it), an experiment name
    (its completed runs, one subject per group), or ``tag:NAME`` (completed runs with that tag,
    one subject per group). Unknown tokens raise ``CompareError`` naming what exists."""
    subjects: list[Subject] = []
    seen: set[tuple] = set()
    for token in tokens:
        for subject in _resolve_one(store, str(token).strip()):
            key = tuple(subject.ids)
            if key not in seen:
                seen.add(key)
                subjects.append(subject)
    return subjects


def _completed(store, **filters) -> list[dict]:
    rows = store.list_runs(status="completed", limit=None, **filters)
    return [store.get_run(r["id"]) for r in sorted(rows, key=lambda r: r["id"])]


def _resolve_one(store, token: str) -> list[Subject]:
    if _RUN_TOKEN.fullmatch(token):
        try:
            run = store.get_run(token)
        except RunNotFound as exc:
            raise CompareError(str(exc)) from None
        return [Subject(format_run_id(parse_run_id(token)), [run], run["group_hash"], token)]
    if token.lower().startswith("tag:"):
        tag = token[4:]
        runs = _completed(store, tag=tag)
        if not runs:
            raise CompareError(f"no completed run is tagged {tag!r} in {store.location} "
                               "(merx tag RUN TAG adds one; merx runs --tag TAG lists them)")
        return subjects_from_runs(runs, token)
    if "@" in token:
        experiment, _, prefix = token.partition("@")
        return [_group(store, prefix.lower(), experiment or None, token)]
    if token in store.experiments():
        runs = _completed(store, experiment=token)
        if not runs:
            raise CompareError(f"experiment {token!r} has no completed run yet (merx runs --experiment {token})")
        return subjects_from_runs(runs, token)
    if len(token) >= 6 and _HEX.fullmatch(token.lower()) and store.group_hashes(token.lower()):
        return [_group(store, token.lower(), None, token)]
    raise CompareError(_unknown(store, token))


def _group(store, prefix: str, experiment: str | None, token: str) -> Subject:
    if len(prefix) < MIN_HASH_PREFIX or not _HEX.fullmatch(prefix):
        raise CompareError(f"{token!r}: after '@' give at least {MIN_HASH_PREFIX} hex digits of a group hash "
                           "(merx runs shows each run's group)")
    hashes = store.group_hashes(prefix)
    if experiment is not None:
        hashes = [h for h in hashes if store.list_runs(experiment=experiment, group_hash=h, limit=1)]
    if not hashes:
        raise CompareError(f"no group {token!r} in {store.location}" + _listing(store))
    if len(hashes) > 1:
        raise CompareError(f"{token!r} matches {len(hashes)} groups ({', '.join(h[:12] for h in hashes)}): "
                           "give more digits of the hash")
    runs = _completed(store, group_hash=hashes[0], experiment=experiment)
    if not runs:
        raise CompareError(f"group {token!r} has no completed run")
    return Subject(group_label(runs[0]["experiment"], hashes[0]) if len(runs) > 1 else format_run_id(runs[0]["id"]),
                   runs, hashes[0], token)


def _listing(store) -> str:
    names = store.experiments()
    latest = [format_run_id(r["id"]) for r in store.list_runs(limit=5)]
    if not names:
        return f"; {store.location} holds no runs yet (--db PATH or MERX_DB selects another database)."
    return (f"; the experiments are {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}"
            f" and the latest runs {', '.join(latest)}.")


def _unknown(store, token: str) -> str:
    close = difflib.get_close_matches(token, store.experiments(), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"{token!r} is not a run id (run12), a group (name@3f2a9c1d), an experiment or a tag:NAME "
            f"in {store.location}{hint}" + _listing(store))


# -- small helpers --------------------------------------------------------------------------

_MISSING = "—"


def _display(value: Any) -> str:
    if value is _MISSING:
        return _MISSING
    if value is None:
        return "(not set)"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict, bool)):
        return json.dumps(value)
    return str(value)


def _differs(values: list) -> bool:
    first = values[0]
    return any(v != first for v in values[1:])


def _joined(values) -> str:
    uniq = sorted({str(v) for v in values if v is not None})
    return " / ".join(uniq) if uniq else "-"


# -- config and provenance ------------------------------------------------------------------

def config_differences(subjects: list[Subject], show_all: bool = False) -> dict:
    """``{"keys": {flat_key: [display value per subject]}, "differing": [keys]}``.

    A key a subject's config lacks (another plugin's setting) shows as "—". Within a group the
    seed differs by definition: groups show their seeds as a list instead."""
    from merx.config import flatten

    flats = []
    for s in subjects:
        flat = flatten(s.config)
        flat["seed"] = sorted(r["seed"] for r in s.runs) if s.is_group else s.config.get("seed")
        flats.append(flat)
    order = list(dict.fromkeys(k for f in flats for k in f))
    values = {k: [f.get(k, _MISSING) for f in flats] for k in order}
    differing = [k for k in order if _differs(values[k])]
    shown = order if show_all else differing
    return {"keys": {k: [_display(v) for v in values[k]] for k in shown}, "differing": differing}


def _plugins_of(run: dict) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for p in run.get("plugins") or []:
        origin = p.get("origin") or "?"
        version = f" {p['version']}" if p.get("version") else ""
        out.setdefault(p["kind"], []).append(f"{p['name']} ({origin}{version})")
    return {k: ", ".join(v) for k, v in out.items()}


def _test_songs(store, run: dict) -> dict[str, tuple]:
    """song_id -> (true quadrant, true V, true A) of the run's test predictions."""
    out = {}
    for p in store.get_predictions(run["id"], split="test"):
        out[p["song_id"]] = (p["true_quadrant"], _round(p["true_valence"]), _round(p["true_arousal"]))
    return out


def _round(x):
    return None if x is None else round(float(x), 5)


def provenance_differences(store, subjects: list[Subject], show_all: bool = False) -> dict:
    """Data, plugin, library and code differences: ``{section: {item: [value per subject]}}``."""
    rows: dict[str, dict[str, list[str]]] = {"data": {}, "plugins": {}, "versions": {}, "code": {}}

    def add(section, item, per_subject):
        rows[section][item] = per_subject

    songs = [[_test_songs(store, r) for r in s.runs] for s in subjects]
    add("data", "test songs", [_joined(len(x) for x in per) for per in songs])
    add("data", "test song set", [_joined(_set_id(x) for x in per) for per in songs])
    add("data", "failed songs", [_joined(len(r.get("failures") or []) for r in s.runs) for s in subjects])
    kinds = list(dict.fromkeys(k for s in subjects for r in s.runs for k in _plugins_of(r)))
    for kind in kinds:
        add("plugins", kind, [_joined(_plugins_of(r).get(kind, "-") for r in s.runs) for s in subjects])
    libs = list(dict.fromkeys(k for s in subjects for r in s.runs for k in (r.get("versions") or {})))
    for lib in libs:
        add("versions", lib, [_joined((r.get("versions") or {}).get(lib, "-") for r in s.runs) for s in subjects])
    add("code", "git commit", [_joined(r.get("git_commit") or "-" for r in s.runs) for s in subjects])
    add("code", "device", [_joined(r.get("device") or "-" for r in s.runs) for s in subjects])
    if not show_all:
        rows = {sec: {k: v for k, v in items.items() if _differs(v)} for sec, items in rows.items()}
    return {sec: items for sec, items in rows.items() if items}


def _set_id(songs: dict) -> str:
    """A short fingerprint of a test set (ids and true labels), to see at a glance whether two agree."""
    import hashlib

    text = json.dumps(sorted((k, *v) for k, v in songs.items()), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# -- metrics --------------------------------------------------------------------------------

def _metric_order(subjects: list[Subject]) -> list[str]:
    from merx.metrics import metric_names

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


# -- per-song paired tests ------------------------------------------------------------------

def _q(name) -> float:
    return float(QUADRANTS.index(name)) if name in QUADRANTS else np.nan


def _per_song(preds: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """ids, truth [N, 3] (valence, arousal, quadrant index), prediction [N, 3]."""
    preds = sorted(preds, key=lambda p: p["song_id"])
    nan = float("nan")

    def f(x):
        return nan if x is None else float(x)

    truth = np.array([[f(p["true_valence"]), f(p["true_arousal"]), _q(p["true_quadrant"])] for p in preds]).reshape(-1, 3)
    pred = np.array([[f(p["pred_valence"]), f(p["pred_arousal"]), _q(p["pred_quadrant"])] for p in preds]).reshape(-1, 3)
    return [p["song_id"] for p in preds], truth, pred


def song_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float] | None:
    """The metric ``name`` as a function of per-song (truth, prediction) rows from ``_per_song``, or
    None when it cannot be recomputed from predictions (e.g. the loss)."""
    from merx.metrics import classification_metrics, concordance_cc, r2_score

    record = METRICS.get(name)
    if record is None or not record.per_song:
        return None
    dims = {"valence": 0, "arousal": 1}
    head, _, kind = name.partition("_")
    if head in dims and kind in ("mae", "mse", "r2", "ccc"):
        i = dims[head]
        fns = {"mae": lambda t, p: float(np.mean(np.abs(t - p))), "mse": lambda t, p: float(np.mean((t - p) ** 2)),
               "r2": r2_score, "ccc": concordance_cc}
        fn = fns[kind]
        return lambda truth, pred: fn(truth[:, i], pred[:, i])
    if name in ("accuracy", "quadrant_accuracy"):
        return lambda truth, pred: float(np.mean(truth[:, 2] == pred[:, 2]))
    key = {"macro_f1": "macro_f1", "quadrant_macro_f1": "macro_f1", **{f"f1_{q}": f"f1_{q}" for q in QUADRANTS}}.get(name)
    if key is not None:
        return lambda truth, pred: classification_metrics(truth[:, 2].astype(int), pred[:, 2].astype(int))[key]
    return None


def _same_songs(a: tuple, b: tuple) -> str | None:
    """None when two runs were tested on the same songs with the same labels, else why not."""
    ids_a, truth_a, _ = a
    ids_b, truth_b, _ = b
    if ids_a != ids_b:
        common = len(set(ids_a) & set(ids_b))
        return f"tested on different songs ({len(ids_a)} and {len(ids_b)}, {common} in common)"
    if not np.allclose(truth_a, truth_b, atol=1e-5, equal_nan=True):
        return "the same song ids carry different true labels (another data version?)"
    return None


def paired_run_test(store, a: dict, b: dict, metrics: list[str], n_resamples: int = 2000,
                    seed: int = 0) -> dict:
    """Paired tests of run ``b`` against run ``a`` on their per-song test predictions."""
    from merx.stats import mcnemar, paired_bootstrap, plain_p

    la, lb = format_run_id(a["id"]), format_run_id(b["id"])
    out: dict[str, Any] = {"a": la, "b": lb, "kind": "per-song", "bootstrap": {}, "mcnemar": None}
    pa, pb = _per_song(store.get_predictions(a["id"], "test")), _per_song(store.get_predictions(b["id"], "test"))
    if not pa[0] or not pb[0]:
        out["skipped"] = f"{la if not pa[0] else lb} has no test predictions: no paired test"
        return out
    why = _same_songs(pa, pb)
    if why:
        out["skipped"] = f"{la} and {lb} were {why}: no paired test" if why.startswith("tested") else \
            f"{la} and {lb}: {why}; no paired test"
        return out
    ids, truth, pred_a = pa
    pred_b = pb[2]
    out["n_songs"] = len(ids)
    for m in metrics:
        fn = song_metric(m)
        col = 0 if m.startswith("valence") else 1 if m.startswith("arousal") else 2
        if fn is None or np.isnan(pred_a[:, col]).any() or np.isnan(pred_b[:, col]).any():
            continue  # not a per-song metric, or a run of the other task
        res = paired_bootstrap(fn, truth, pred_a, pred_b, n_resamples=n_resamples, seed=seed)
        entry = res.to_dict()
        entry["verdict"] = _bootstrap_verdict(m, res, la, lb)
        out["bootstrap"][m] = entry
    implied = a["task"] == "regression" or b["task"] == "regression"
    res = mcnemar(pred_a[:, 2] == truth[:, 2], pred_b[:, 2] == truth[:, 2])
    entry = res.to_dict()
    what = "implied quadrant" if implied else "quadrant"
    entry["what"] = what
    if res.only_a + res.only_b == 0:
        entry["verdict"] = (f"McNemar on the {what}: no song is right for one run and wrong for the other "
                            f"(both right on {res.both}, both wrong on {res.neither}): no evidence of a difference.")
    else:
        entry["verdict"] = (f"McNemar ({res.method}) on the {what}: {lb} is right on {res.only_b} songs where {la} "
                            f"is wrong, and wrong on {res.only_a} where {la} is right; {plain_p(res.p_value)}.")
    if len(ids) < 20:
        out["small_sample"] = (f"only {len(ids)} test songs: these intervals and p-values are rough")
    out["mcnemar"] = entry
    return out


def _bootstrap_verdict(metric: str, res, la: str, lb: str) -> str:
    if res.estimate is None or res.low is None:
        return f"{metric}: undefined on these songs"
    pct = f"{res.confidence:.0%}"
    text = (f"{metric}: {lb} - {la} = {res.estimate:+.4f}, {pct} paired bootstrap interval "
            f"[{res.low:+.4f}, {res.high:+.4f}]")
    hib = higher_is_better(metric)
    if not res.excludes_zero:
        return text + ": the interval contains 0, no clear difference"
    better = (res.low > 0) == bool(hib) if hib is not None else None
    who = "" if better is None else f", {lb} is {'better' if better else 'worse'}"
    return text + f": the interval excludes 0{who}"


def paired_group_test(a: Subject, b: Subject, metrics: list[str]) -> dict:
    """t-tests across seeds of group ``b`` against group ``a``, per metric."""
    from merx.stats import plain_p, seed_test

    out: dict[str, Any] = {"a": a.label, "b": b.label, "kind": "across seeds", "seed_tests": {}}
    for m in metrics:
        va = {r["seed"]: ((r.get("metrics") or {}).get("test") or {}).get(m) for r in a.runs}
        vb = {r["seed"]: ((r.get("metrics") or {}).get("test") or {}).get(m) for r in b.runs}
        res = seed_test(va, vb)
        if res is None:
            continue
        entry = res.to_dict()
        hib = higher_is_better(m)
        direction = ""
        if res.mean_difference is not None and hib is not None and res.mean_difference != 0:
            direction = f" ({b.label} {'better' if (res.mean_difference > 0) == hib else 'worse'} on average)"
        entry["verdict"] = (f"{m}: {b.label} - {a.label} = {res.mean_difference:+.4f}{direction}; {res.test} over "
                            f"{res.n_a} and {res.n_b} seeds, {plain_p(res.p_value)}")
        out["seed_tests"][m] = entry
    if not out["seed_tests"]:
        out["skipped"] = (f"{a.label} and {b.label}: a test across seeds needs at least two seeds on each side "
                          "(merx run FILE --seeds 5)")
    return out


# -- the comparison -------------------------------------------------------------------------

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


# -- rendering ------------------------------------------------------------------------------

def format_summary(s: dict, digits: int = 4, interval: bool = True) -> str:
    """``0.7123`` for one run; ``0.7123 ± 0.0210 [0.69, 0.74]`` for a group."""
    if s["mean"] is None:
        return "-"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}"
    text = f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
    if interval and s["ci_low"] is not None:
        text += f" [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"
    return text


def titled_table(title: str):
    """A rich table whose title is never wrapped to a narrow table's width."""
    from rich.table import Table

    return Table(title=title, title_justify="left", min_width=len(title))


def render(result: dict, console) -> None:
    """Print a comparison made by :func:`compare` as rich tables and sentences."""
    from rich.text import Text

    labels = [s["label"] for s in result["subjects"]]
    groups = result["mode"] == "groups"

    t = titled_table("compared")
    for col in ("", "experiment", "task", "runs", "seeds", "group"):
        t.add_column(col)
    for s in result["subjects"]:
        t.add_row(Text(s["label"], style="bold"), s["experiment"], s["task"], ", ".join(s["runs"]),
                  ", ".join(map(str, s["seeds"])), s["group_hash"][:8])
    console.print(t)

    cfg = result["config"]
    if cfg["keys"]:
        title = "config (every key)" if len(cfg["keys"]) > len(cfg["differing"]) else "config keys that differ"
        t = titled_table(title)
        t.add_column("key", style="cyan")
        for label in labels:
            t.add_column(label)
        for key, values in cfg["keys"].items():
            style = "bold" if key in cfg["differing"] else "dim"
            t.add_row(key, *(Text(v, style=style) for v in values))
        console.print(t)
    else:
        console.print("config: identical" + (" (apart from the seeds)" if groups else ""))

    if result["provenance"]:
        t = titled_table("data, plugins, versions and code that differ")
        t.add_column("what", style="cyan")
        for label in labels:
            t.add_column(label)
        for section, items in result["provenance"].items():
            for item, values in items.items():
                t.add_row(f"{section}: {item}", *values)
        console.print(t)

    t = titled_table("test metrics" + (" (mean ± std [95 % t interval] over seeds)" if groups else "")
               + (f"; Δ = difference to {labels[0]}" if len(labels) > 1 else ""))
    t.add_column("metric")
    for i, label in enumerate(labels):
        t.add_column(label, justify="right", style="bold" if i == 0 else None)
    for metric, row in result["metrics"].items():
        cells = []
        for i, (s, d) in enumerate(zip(row["subjects"], row["difference"])):
            text = Text(format_summary(s))
            if i > 0 and d is not None:
                good = None if row["higher_is_better"] is None or d == 0 else (d > 0) == row["higher_is_better"]
                text.append(f"  Δ {d:+.4f}", style="green" if good else "red" if good is False else "dim")
            cells.append(text)
        t.add_row(metric, *cells)
    console.print(t)

    if result["baselines"]:
        t = titled_table("baselines (fitted on each run's training split; mean over a group's runs)")
        t.add_column("baseline")
        t.add_column("metric")
        for label in labels:
            t.add_column(label, justify="right", style="dim")
        for b, per_metric in result["baselines"].items():
            for m, values in per_metric.items():
                t.add_row(b, m, *("-" if v is None else f"{v:.4f}" for v in values))
        console.print(t)

    t = titled_table("training")
    t.add_column("")
    for label in labels:
        t.add_column(label, justify="right")
    names = {"best_epoch": "best epoch", "epochs_run": "epochs run", "wall_seconds": "wall time (s)"}
    for key, per in result["training"].items():
        t.add_row(names[key], *(format_summary(s, 1 if key == "wall_seconds" else 0, interval=False) for s in per))
    console.print(t)

    for test in result["tests"]:
        console.print(Text(f"{test['b']} against {test['a']} ({test['kind']})", style="bold underline"))
        for key in ("skipped", "small_sample"):
            if test.get(key):
                console.print(Text("  " + test[key], style="yellow"))
        for entry in (test.get("bootstrap") or {}).values():
            console.print(Text("  " + entry["verdict"], style="green" if entry["excludes_zero"] else ""))
        if test.get("mcnemar"):
            console.print(Text("  " + test["mcnemar"]["verdict"]))
        for entry in (test.get("seed_tests") or {}).values():
            p = entry["p_value"]
            console.print(Text("  " + entry["verdict"], style="green" if p is not None and p < 0.05 else ""))
    for note in result["notes"]:
        console.print(Text("note: " + note, style="yellow"))
