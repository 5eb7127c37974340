"""``merx export``: runs, metrics, epochs and predictions as CSV or JSON, and comparison tables
as Markdown or LaTeX, for papers and notebooks.

Tables of records (``rows``):

* ``runs``: one row per run: its columns (``run`` = ``run12``), its tags and note, its test
  metrics as ``test.<metric>`` and its resolved config flattened as ``config.<key>``;
* ``metrics``: one row per run, split and metric (``run, split, metric, value``);
* ``baselines``: one row per run, baseline and metric;
* ``epochs``: the learning curves, one row per run, epoch and metric;
* ``predictions``: one row per run and song (class probabilities as ``prob_Q1`` .. ``prob_Q4``).

CSV writes each value as Python prints it (floats round-trip exactly), an empty cell for a
missing value, and lists (tags, config lists) as JSON text. JSON writes the same records with
their native types. :func:`read_csv` reads a CSV export back into the same records.

Text that a spreadsheet would run as a formula (OWASP's CSV injection: a cell starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return, e.g. a note ``=HYPERLINK(...)``) is
written with a leading ``'``, which Excel, LibreOffice and Google Sheets show as text. Numbers
(-0.25) and text that is exactly a number ("-0.5") are left alone; headers are text like any
cell. Text that already starts with quotes before such a character gets one more, so
:func:`read_csv` removes exactly one quote and gives back what was stored; other CSV readers
(pandas, a spreadsheet) see the quote.

Markdown and LaTeX tables escape what the user named (labels, config values) for their
format, and every table loses control characters.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable
from typing import TextIO

from merx.commands.output import clean
from merx.data.songs import NOTE_KINDS, QUADRANTS, TRUTH

KINDS = ("runs", "metrics", "baselines", "epochs", "predictions")
_RUN_COLUMNS = ("experiment", "status", "task", "seed", "group_hash", "config_hash", "started_at", "ended_at",
                "wall_seconds", "best_epoch", "epochs_run", "device", "git_commit", "experiment_file",
                "description", "note", "error")


def rows(store, kind: str, run_ids: Iterable[int]) -> list[dict]:
    """The records of ``kind`` (one of ``KINDS``) for the runs ``run_ids``, in that order."""
    from merx.config import flatten

    if kind not in KINDS:
        raise ValueError(f"unknown export {kind!r}: choose one of {', '.join(KINDS)}")
    out: list[dict] = []
    for run_id in run_ids:
        name = f"run{run_id}"
        if kind == "predictions":
            for p in store.get_predictions(run_id):
                row = {"run": name, **{k: v for k, v in p.items() if k != "probs"}}
                probs = p.get("probs")
                if isinstance(probs, dict):
                    probs = [probs.get(q) for q in QUADRANTS]
                for q, i in zip(QUADRANTS, range(len(QUADRANTS)), strict=True):
                    row[f"prob_{q}"] = probs[i] if probs else None
                out.append(row)
            continue
        run = store.get_run(run_id)
        if kind == "runs":
            row = {"run": name, **{k: run.get(k) for k in _RUN_COLUMNS}, "tags": run.get("tags") or []}
            # What its metrics are scored against, and how many songs' labels disagree with it.
            row["truth"] = TRUTH.get(run.get("task"))
            row.update({f"data_notes.{kind}": sum(n["kind"] == kind for n in run.get("data_notes") or [])
                        for kind in NOTE_KINDS})
            row.update({f"test.{m}": v for m, v in (run["metrics"].get("test") or {}).items()})
            row.update({f"config.{k}": v for k, v in flatten(run["config"]).items()})
            out.append(row)
        elif kind == "metrics":
            out += [{"run": name, "split": split, "metric": m, "value": v}
                    for split, ms in run["metrics"].items() for m, v in ms.items()]
        elif kind == "baselines":
            out += [{"run": name, "baseline": b, "metric": m, "value": v}
                    for b, ms in run["baselines"].items() for m, v in ms.items()]
        elif kind == "epochs":
            out += [{"run": name, "epoch": int(e), "metric": m, "value": v}
                    for e, ms in sorted(run["epochs"].items(), key=lambda x: int(x[0])) for m, v in ms.items()]
    return out


# -- CSV and JSON ---------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _neutralised(text: str) -> str:
    """``text`` with a leading ``'`` if a spreadsheet would read it as a formula."""
    bare = text.lstrip("'")
    if bare[:1] in _FORMULA_START and not (bare == text and _NUMBER.fullmatch(text)):
        return "'" + text
    return text


def _restored(text: str) -> str | None:
    """The text :func:`_neutralised` was given, or None when ``text`` is not neutralised."""
    if text.startswith("'") and text.lstrip("'")[:1] in _FORMULA_START:
        return text[1:]
    return None


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict, bool)):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return _neutralised(str(value))


def write_csv(records: list[dict], fh: TextIO) -> None:
    """``records`` as CSV, columns in order of first appearance; text that would be a formula
    in a spreadsheet gets a leading ``'`` (see the module's docstring)."""
    columns = list(dict.fromkeys(k for r in records for k in r))
    # The writer quotes a value holding a character of its line terminator: with "\n" alone, a
    # lone "\r" (old Mac line ends in a note) went out unquoted and the file no longer parsed.
    # So it writes "\r\n", and each row's end is turned back into "\n".
    row = io.StringIO()
    writer = csv.writer(row, lineterminator="\r\n")
    for cells in [[_neutralised(str(c)) for c in columns], *([_cell(r.get(c)) for c in columns] for r in records)]:
        writer.writerow(cells)
        fh.write(row.getvalue()[:-2] + "\n")
        row.seek(0)
        row.truncate()


def write_json(records: list[dict], fh: TextIO) -> None:
    """``records`` as a JSON list (NaN written as null: JSON has no NaN)."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    json.dump([clean(r) for r in records], fh, indent=2, default=str)
    fh.write("\n")


def _parse(text: str):
    if text == "":
        return None
    restored = _restored(text)
    if restored is not None:
        return restored
    if text[0] in "[{" or text in ("true", "false"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    if text.isdigit():
        return int(text) if text == "0" or not text.startswith("0") else text  # "007": an id, not a number
    try:
        return float(text) if text.lstrip("+-")[:1].isdigit() or text.lstrip("+-")[:1] == "." else text
    except ValueError:
        return text


def read_csv(fh: TextIO) -> list[dict]:
    """Read a CSV written by :func:`write_csv` back: numbers, lists and booleans typed again,
    empty cells (None, and the empty string) as None, the ``'`` before text that would be a
    formula removed. As with any CSV reader, text that looks like a number (a hash of digits
    only) comes back as a number."""
    return [{(_restored(k) or k) if isinstance(k, str) else k: _parse(v) for k, v in r.items()}
            for r in csv.DictReader(fh)]


# -- comparison tables ----------------------------------------------------------------------

def comparison_rows(subjects, metrics: list[str] | None = None) -> tuple[list[str], list[str], list[dict]]:
    """For a table of ``subjects`` (``merx.compare.Subject``): the config keys that differ
    between them (seed left out), the metric columns, and one row per subject with its
    ``label``, ``n`` runs, ``keys`` values and per-metric summaries."""
    from merx.compare import DEFAULT_TESTED, config_differences, metric_table

    table = metric_table(subjects)
    if metrics is None:
        metrics = [m for m in dict.fromkeys(m for s in subjects for m in DEFAULT_TESTED[s.config["task"]])
                   if m in table]
    else:
        missing = [m for m in metrics if m not in table]
        if missing:
            raise ValueError(f"no test metric {', '.join(map(repr, missing))} in these runs; they have "
                             f"{', '.join(table)}")
    diff = config_differences(subjects) if len(subjects) > 1 else {"keys": {}, "differing": []}
    keys = [k for k in diff["differing"] if k not in ("seed", "name", "description", "tags")]
    out = []
    for i, s in enumerate(subjects):
        out.append({"label": s.label, "n": len(s.runs), "keys": {k: diff["keys"][k][i] for k in keys},
                    "metrics": {m: table[m]["subjects"][i] for m in metrics}})
    return keys, metrics, out


def _best(rows_: list[dict], metric: str) -> set[int]:
    from merx.metrics import higher_is_better

    hib = higher_is_better(metric)
    means = [(i, r["metrics"][metric]["mean"]) for i, r in enumerate(rows_) if r["metrics"][metric]["mean"] is not None]
    if hib is None or len(means) < 2:
        return set()
    target = (max if hib else min)(v for _, v in means)
    return {i for i, v in means if v == target}


def _value(s: dict, digits: int, pm: str) -> str:
    if s["mean"] is None:
        return "-"
    if s["n"] > 1 and s["std"] is not None:
        return f"{s['mean']:.{digits}f}{pm}{s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f}"


def markdown_table(subjects, metrics: list[str] | None = None, digits: int = 4) -> str:
    """A Markdown table: one row per subject, differing config keys then metrics (mean ± std over
    seeds for a group); the best value of each metric in bold."""
    keys, metrics, rows_ = comparison_rows(subjects, metrics)
    best = {m: _best(rows_, m) for m in metrics}
    head = ["model", "runs", *keys, *metrics]
    lines = ["| " + " | ".join(markdown_escape(h) for h in head) + " |",
             "|" + "|".join(["---"] * (2 + len(keys)) + ["---:"] * len(metrics)) + "|"]
    for i, r in enumerate(rows_):
        cells = [markdown_escape(r["label"]), str(r["n"]), *(markdown_escape(r["keys"][k]) for k in keys)]
        for m in metrics:
            v = _value(r["metrics"][m], digits, " ± ")
            cells.append(f"**{v}**" if i in best[m] else v)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# Every character that can open Markdown (CommonMark, GitHub's tables, strikethrough and $math$)
# or inline HTML; "_" only where it can start or end emphasis, so model_name stays readable.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]<>|~&$]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def markdown_escape(text) -> str:
    """``text`` as literal Markdown in a table cell: on one line, without control characters,
    every character that Markdown or HTML would read backslash-escaped."""
    one_line = " ".join(clean(text).split("\n")).replace("\t", " ")
    return _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(), one_line)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """``text`` as literal LaTeX, on one line and without control characters."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in " ".join(clean(text).split("\n")))


def latex_table(subjects, metrics: list[str] | None = None, digits: int = 4) -> str:
    """A LaTeX ``tabular`` (booktabs rules), as :func:`markdown_table`; the best value in bold."""
    keys, metrics, rows_ = comparison_rows(subjects, metrics)
    best = {m: _best(rows_, m) for m in metrics}
    spec = "l" + "r" + "l" * len(keys) + "r" * len(metrics)
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(latex_escape(h) for h in ["model", "runs", *keys, *metrics]) + r" \\", "\\midrule"]
    for i, r in enumerate(rows_):
        cells = [latex_escape(r["label"]), str(r["n"]), *(latex_escape(r["keys"][k]) for k in keys)]
        for m in metrics:
            v = _value(r["metrics"][m], digits, " \\pm ")
            if v != "-":
                v = f"$\\mathbf{{{v}}}$" if i in best[m] else f"${v}$"
            cells.append(v)
        lines.append(" & ".join(cells) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def dumps(records: list[dict], fmt: str) -> str:
    """``records`` as CSV or JSON text."""
    buf = io.StringIO()
    (write_csv if fmt == "csv" else write_json)(records, buf)
    return buf.getvalue()
