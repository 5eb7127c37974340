"""Drawing a comparison made by :func:`merx.compare.compare` with rich: tables, then the tests'
verdicts in sentences. Labels, names, config values and verdicts quoting them are user text:
they reach rich as ``plain`` ``Text`` (merx.commands.output), never as markup."""

from __future__ import annotations


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
    """A rich table whose title is never wrapped to a narrow table's width; the title is text,
    not markup (it may quote a label or a metric the user named)."""
    from rich.table import Table

    from merx.commands.output import plain

    return Table(title=plain(title), title_justify="left", min_width=len(title))


def render(result: dict, console) -> None:
    """Print a comparison made by :func:`compare` as rich tables and sentences."""
    from rich.text import Text

    from merx.commands.output import clean, plain

    labels = [s["label"] for s in result["subjects"]]
    groups = result["mode"] == "groups"

    t = titled_table("compared")
    for col in ("", "experiment", "task", "runs", "seeds", "group"):
        t.add_column(col)
    for s in result["subjects"]:
        t.add_row(plain(s["label"], "bold"), plain(s["experiment"]), plain(s["task"]), plain(", ".join(s["runs"])),
                  plain(", ".join(map(str, s["seeds"]))), plain(s["group_hash"][:8]))
    console.print(t)

    cfg = result["config"]
    if cfg["keys"]:
        title = "config (every key)" if len(cfg["keys"]) > len(cfg["differing"]) else "config keys that differ"
        t = titled_table(title)
        t.add_column("key", style="cyan")
        for label in labels:
            t.add_column(plain(label))
        for key, values in cfg["keys"].items():
            style = "bold" if key in cfg["differing"] else "dim"
            t.add_row(plain(key), *(plain(v, style) for v in values))
        console.print(t)
    else:
        console.print("config: identical" + (" (apart from the seeds)" if groups else ""))

    if result["provenance"]:
        t = titled_table("data, plugins, versions and code that differ")
        t.add_column("what", style="cyan")
        for label in labels:
            t.add_column(plain(label))
        for section, items in result["provenance"].items():
            for item, values in items.items():
                t.add_row(plain(f"{section}: {item}"), *map(plain, values))
        console.print(t)

    t = titled_table("test metrics" + (" (mean ± std [95 % t interval] over seeds)" if groups else "")
               + (f"; Δ = difference to {labels[0]}" if len(labels) > 1 else ""))
    t.add_column("metric")
    for i, label in enumerate(labels):
        t.add_column(plain(label), justify="right", style="bold" if i == 0 else None)
    for metric, row in result["metrics"].items():
        cells = []
        for i, (s, d) in enumerate(zip(row["subjects"], row["difference"], strict=True)):
            text = Text(format_summary(s))
            if i > 0 and d is not None:
                good = None if row["higher_is_better"] is None or d == 0 else (d > 0) == row["higher_is_better"]
                text.append(f"  Δ {d:+.4f}", style="green" if good else "red" if good is False else "dim")
            cells.append(text)
        t.add_row(plain(metric + (" (primary)" if metric == result.get("primary_metric") else "")), *cells)
    console.print(t)

    if result["baselines"]:
        t = titled_table("baselines (fitted on each run's training split; mean over a group's runs)")
        t.add_column("baseline")
        t.add_column("metric")
        for label in labels:
            t.add_column(plain(label), justify="right", style="dim")
        for b, per_metric in result["baselines"].items():
            for m, values in per_metric.items():
                t.add_row(plain(b), plain(m), *("-" if v is None else f"{v:.4f}" for v in values))
        console.print(t)

    t = titled_table("training")
    t.add_column("")
    for label in labels:
        t.add_column(plain(label), justify="right")
    names = {"best_epoch": "best epoch", "epochs_run": "epochs run", "wall_seconds": "wall time (s)"}
    for key, per in result["training"].items():
        t.add_row(names[key], *(format_summary(s, 1 if key == "wall_seconds" else 0, interval=False) for s in per))
    console.print(t)

    for task, truth in (result.get("truth") or {}).items():
        console.print(plain(f"truth: {task} runs are scored against {truth}", "dim"))
    if result["tests"] and result.get("multiple_testing"):
        console.print(plain(result["multiple_testing"]["statement"], "italic"))
    for test in result["tests"]:
        console.print(plain(f"{test['b']} against {test['a']} ({test['kind']})", "bold underline"))
        for key in ("skipped", "small_sample", "no_primary"):
            if test.get(key):
                console.print(plain("  " + test[key], "yellow"))
        entries = [*(test.get("bootstrap") or {}).values(), *([test["mcnemar"]] if test.get("mcnemar") else []),
                   *(test.get("seed_tests") or {}).values()]
        for entry in entries:
            line = plain(f"  [{entry['label']}] ", "bold" if entry["role"] == "primary" else "dim")
            line.append(clean(entry["verdict"]), style="green" if entry["significant"] else "")
            console.print(line)
    for note in result["notes"]:
        console.print(plain("note: " + note, "yellow"))
