"""CLI commands about plugins: ``list-plugins``, ``plugin new`` (write a plugin to start from)
and ``plugin check`` (run the test kit on one)."""

from __future__ import annotations

import json

import click

from merx.commands.options import json_option, set_option
from merx.commands.output import clean, console, plain
from merx.hookspecs import KINDS


@click.command("list-plugins")
@click.option("--kind", type=click.Choice(list(KINDS)), help="Only this kind.")
@json_option("Machine-readable output.")
@click.option("--requirements", is_flag=True,
              help="Print a requirements line (dist==version) per installed plugin distribution.")
def list_plugins_cmd(kind, as_json, requirements):
    """Show installed plugins of every kind: name, origin, settings, description; then every
    loaded plugin module with the hooks it implements, and those that failed to load."""
    from merx.plugins import get_registry

    reg = get_registry()
    kinds = [kind] if kind else list(KINDS)
    modules = _modules(reg)
    broken = reg.broken  # distributions and files that failed to import or to register something
    if requirements:
        _print_requirements(modules, broken)
        return
    if as_json:
        hooks_of = {(m["origin"], m["source"]): m["hooks"] for m in modules}
        out = {}
        for k in kinds:
            out[k] = [{"name": p.name, "origin": p.origin, "source": p.source, "version": p.version,
                       "hook": p.hook, "hooks": hooks_of.get((p.origin, p.source), [p.hook]),
                       "summary": p.summary,
                       "params": [{"name": q.name, "required": q.required,
                                   "default": None if q.required else q.default} for q in p.params]}
                      for p in (reg.plugins[k][n] for n in reg.names(k))]
        click.echo(json.dumps(out, indent=2, default=repr))
        return
    from rich.table import Table

    out = console()
    for k in kinds:
        table = Table(title=f"{k.replace('_', ' ')} — {KINDS[k].description}", title_justify="left",
                      show_lines=False, expand=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("origin", style="magenta")
        table.add_column("settings (defaults)")
        table.add_column("description")
        for name in reg.names(k):
            p = reg.plugins[k][name]
            # Names, paths, defaults and docstrings are the plugin author's text, not markup.
            table.add_row(plain(name), plain(p.origin_label), plain(", ".join(q.describe() for q in p.params) or "-"),
                          plain(p.summary))
        if not reg.plugins[k]:
            table.add_row("-", "-", "-", "(none installed)")
        out.print(table)
    if not kind:
        out.print(_modules_table(modules, broken))


def _modules(reg) -> list[dict]:
    """Every loaded plugin module, in load order: pluggy names each "origin:source" (merx.plugins)."""
    from importlib import metadata

    modules = []
    for plugin_name, module in reg.pm.list_name_plugin():
        origin, _, source = plugin_name.partition(":")
        version = next((p.version for ps in reg.plugins.values() for p in ps.values()
                        if p.origin == origin and p.source == source), None)
        if origin == "distribution" and version is None:
            try:
                version = metadata.version(source)
            except metadata.PackageNotFoundError:
                pass
        hooks = sorted(h.name for h in reg.pm.get_hookcallers(module) or [])
        modules.append({"origin": origin, "source": source, "version": version, "hooks": hooks})
    return modules


def _requirement(dist: str, version: str | None) -> str:
    return f"{dist}=={version}" if version else dist


def _print_requirements(modules: list[dict], broken: list) -> None:
    loaded = {(m["source"], m["version"]) for m in modules if m["origin"] == "distribution"}
    failed: dict[tuple, str] = {}
    for b in broken:
        if b.origin == "distribution":
            failed.setdefault((b.source, b.version), b.error)
    # A broken distribution is still a requirement of the project: listing it keeps the file
    # complete, and the comment on stderr says it needs fixing.
    dists = sorted(loaded | set(failed))
    for dist, version in dists:
        click.echo(clean(_requirement(dist, version)))
    for (dist, version), error in failed.items():
        what = "some of its plugins were refused" if (dist, version) in loaded else "merx could not load it"
        click.echo(clean(f"# {_requirement(dist, version)} is installed but {what}: {error}"), err=True)
    local = [m["source"] for m in modules if m["origin"] == "local file"]
    if local:
        # On stderr, so that `merx list-plugins --requirements > requirements.txt` stays clean.
        click.echo(clean("# local plugin files are not installable; copy them with the project: "
                         + ", ".join(local)), err=True)
    if not dists:
        click.echo("# no plugin distributions installed (built-ins come with merx)", err=True)


def _modules_table(modules: list[dict], broken: list):
    from rich.table import Table
    from rich.text import Text

    problems: dict[tuple, list[str]] = {}
    for b in broken:
        problems.setdefault((b.origin, b.source), []).append(b.error)
    rows = [(m["origin"], m["source"], m["version"], m["hooks"]) for m in modules]
    loaded = {(origin, source) for origin, source, _, _ in rows}
    rows += [(b.origin, b.source, b.version, []) for b in broken if (b.origin, b.source) not in loaded]
    local = any(origin == "local file" for origin, *_ in rows)
    table = Table(title="plugin modules and the hooks they implement", title_justify="left", expand=False,
                  caption=("local plugin files are code that runs: --no-local-plugins or "
                           "MERX_NO_LOCAL_PLUGINS=1 skips them") if local else None, caption_justify="left")
    table.add_column("module", style="bold")
    table.add_column("origin", style="magenta")
    table.add_column("hooks")
    seen = set()
    for origin, source, version, hooks in rows:
        if (origin, source) in seen:
            continue
        seen.add((origin, source))
        label = {"distribution": f"{source} {version or ''}".strip(), "local file": "local file"}.get(origin, origin)
        errors = problems.get((origin, source), [])
        cell = Text(", ".join(hooks) or ("" if errors else "-"))
        for error in errors:
            cell.append("\n" if cell else "").append("broken: ", style="bold red").append(clean(error))
        table.add_row(plain(source), plain(label), cell)
    return table


@click.group("plugin")
def plugin_group():
    """Write and check plugins (see docs/plugins.md)."""


@plugin_group.command("new")
@click.argument("kind")
@click.argument("name")
@click.option("--package", is_flag=True,
              help="Write an installable distribution merx-NAME/ (pyproject with an entry point, "
                   "module, test) instead of plugins/NAME.py.")
@click.option("--dir", "folder", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to write into.")
def new_cmd(kind, name, package, folder):
    """Write a ready-to-edit plugin of KIND (fusion, audio_tower, text_tower) called NAME, with a test.

    Without --package: plugins/NAME.py, which merx loads from the folder it runs in, and
    tests/test_NAME_plugin.py. Both pass `python -m pytest` as written."""
    from merx.scaffold import new_plugin, normalize_kind

    written = new_plugin(kind, name, folder, package=package)
    kind = normalize_kind(kind)
    out = console()
    for path in written:
        out.print(plain(f"wrote {path}"))
    test = next(p for p in written if p.name.startswith("test_"))
    steps = ([f"pip install -e {written[0].parent}   # makes the entry point known to merx"] if package else [])
    steps += [f"python -m pytest {test}",
              f"merx list-plugins --kind {kind}",
              f"in an experiment: [{KINDS[kind].table}] name = \"{name}\""]
    out.print("next:\n" + "\n".join(f"  {s}" for s in steps), highlight=False, markup=False)


@plugin_group.command("check")
@click.argument("kind")
@click.argument("name")
@set_option("A setting of the plugin (repeatable), read as TOML like `merx run --set`.")
def check_cmd(kind, name, sets):
    """Run merx's plugin test kit (merx.testing) on the registered KIND plugin NAME."""
    from merx.config import parse_set
    from merx.errors import PluginRuntimeError, UsageError
    from merx.scaffold import normalize_kind
    from merx.testing import PluginCheckError, check_audio_tower, check_fusion, check_text_tower

    checks = {"fusions": check_fusion, "audio_towers": check_audio_tower, "text_towers": check_text_tower}
    kind = normalize_kind(kind)
    settings = dict(parse_set(s) for s in sets)
    if kind not in checks:
        raise UsageError(f"the test kit checks {', '.join(KINDS[k].singular for k in checks)}; "
                         f"not {KINDS[kind].singular}")
    try:
        report = checks[kind](name, **settings)
    except PluginCheckError as exc:
        # The plugin broke one of merx's rules: its code needs fixing, not the command line.
        raise PluginRuntimeError(str(exc)) from None
    console().print(str(report), highlight=False, markup=False)


def attach(cli) -> None:
    cli.add_command(list_plugins_cmd)
    cli.add_command(plugin_group)
