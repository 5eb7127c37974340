"""The ``merx`` command line: parse, call, render. Heavy work lives elsewhere, imported lazily."""

from __future__ import annotations

import json
import sys
import warnings

import click

from merx import __version__


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _plugin_warnings_to_stderr() -> None:
    """Show plugin problems as one readable line each, not as python warnings with tracebacks."""
    from merx.plugins import PluginWarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PluginWarning):
            click.echo(click.style("warning: ", fg="yellow") + str(message), err=True)
        else:
            _original(message, category, filename, lineno, file, line)

    _original = warnings.showwarning
    warnings.showwarning = show


def fail(message: str, code: int = 2, hint: str | None = None):
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)
    if hint:
        click.echo(click.style("hint: ", fg="cyan") + hint, err=True)
    sys.exit(code)


class MerxGroup(click.Group):
    """Loads plugin commands (``register_commands``) the first time the command list is needed."""

    _plugins_loaded = False

    def _load_plugin_commands(self, ctx):
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from merx.plugins import get_registry

        try:
            get_registry().pm.hook.register_commands(cli=self)
        except Exception as exc:  # a plugin's command must not take the CLI down
            click.echo(click.style("warning: ", fg="yellow") + f"a plugin failed in register_commands: {exc}",
                       err=True)

    def list_commands(self, ctx):
        self._load_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None:
            self._load_plugin_commands(ctx)
            cmd = super().get_command(ctx, name)
        return cmd


@click.group(cls=MerxGroup)
@click.version_option(__version__, prog_name="merx")
@click.option("--plugins-dir", multiple=True, type=click.Path(file_okay=False),
              help="Extra folder of local plugin files (besides ./plugins).")
@click.option("--no-local-plugins", is_flag=True, help="Do not load ./plugins or --plugins-dir files.")
def cli(plugins_dir, no_local_plugins):
    """merx: bimodal (audio + lyrics) music emotion recognition experiments.

    Write an experiment as a TOML file, then `merx run FILE`."""
    import os

    from merx.plugins import set_plugin_dirs

    if no_local_plugins:
        os.environ["MERX_NO_LOCAL_PLUGINS"] = "1"
    set_plugin_dirs(list(plugins_dir))
    _plugin_warnings_to_stderr()


# -- plugins --------------------------------------------------------------------------------

@cli.command("list-plugins")
@click.option("--kind", type=click.Choice(["data_sources", "audio_augmentations", "text_augmentations",
                                           "audio_towers", "text_towers", "fusions"]),
              help="Only this kind.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_plugins(kind, as_json):
    """Show installed plugins of every kind: name, origin, settings, description."""
    from merx.hookspecs import DESCRIPTIONS, KINDS
    from merx.plugins import get_registry

    reg = get_registry()
    kinds = [kind] if kind else list(KINDS)
    if as_json:
        out = {}
        for k in kinds:
            out[k] = [{"name": p.name, "origin": p.origin, "source": p.source, "version": p.version,
                       "hook": p.hook, "summary": p.summary,
                       "params": [{"name": q.name, "required": q.required,
                                   "default": None if q.required else q.default} for q in p.params]}
                      for p in (reg.plugins[k][n] for n in reg.names(k))]
        click.echo(json.dumps(out, indent=2, default=repr))
        return
    from rich.table import Table

    console = _console()
    for k in kinds:
        table = Table(title=f"{k.replace('_', ' ')} — {DESCRIPTIONS[k]}", title_justify="left",
                      show_lines=False, expand=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("origin", style="magenta")
        table.add_column("settings (defaults)")
        table.add_column("description")
        for name in reg.names(k):
            p = reg.plugins[k][name]
            table.add_row(name, p.origin_label, ", ".join(q.describe() for q in p.params) or "-", p.summary)
        if not reg.plugins[k]:
            table.add_row("-", "-", "-", "(none installed)")
        console.print(table)


# -- config ---------------------------------------------------------------------------------

def _load_config(file, sets):
    from merx.config import ConfigError, load

    try:
        return load(file, list(sets))
    except ConfigError as exc:
        fail(str(exc), 2)


@cli.command("config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
def config_cmd(file, sets, as_json):
    """Print the resolved config of FILE: extends followed, overrides applied, every default filled."""
    from merx.config import config_hash, to_toml

    cfg = _load_config(file, sets)
    if as_json:
        click.echo(json.dumps(cfg, indent=2))
    else:
        click.echo(f"# resolved from {file}; config hash {config_hash(cfg)}")
        click.echo(to_toml(cfg), nl=False)


def main():
    cli(prog_name="merx")


if __name__ == "__main__":
    main()
