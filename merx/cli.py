"""The ``merx`` command line: the group, its global options, and where errors are printed.

The commands live in ``merx.commands``, one module per group of commands; plugins add theirs
through ``register_commands``. Heavy work lives elsewhere, imported lazily: ``merx --help``
imports neither torch nor SQLAlchemy.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from merx import __version__
from merx.errors import MerxError


def _plugin_warnings_to_stderr() -> None:
    """Show plugin problems as one readable line each, not as python warnings with tracebacks."""
    from merx.commands.output import clean
    from merx.plugins import PluginWarning

    original = warnings.showwarning
    if getattr(original, "merx_plugin_warnings", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PluginWarning):
            click.echo(click.style("warning: ", fg="yellow") + clean(message), err=True)
        else:
            original(message, category, filename, lineno, file, line)

    show.merx_plugin_warnings = True
    warnings.showwarning = show


def report_error(exc: MerxError) -> None:
    """How every MerxError reaches the user: one ``error:`` line, and a ``hint:`` line if it has one.

    Both are cleaned of control characters: messages quote file names, experiment names and
    whatever else the user or the results database supplied."""
    from merx.commands.output import clean

    click.echo(click.style("error: ", fg="red", bold=True) + clean(exc), err=True)
    if exc.hint:
        click.echo(click.style("hint: ", fg="cyan") + clean(exc.hint), err=True)


class MerxGroup(click.Group):
    """The ``merx`` group: the one place a :class:`MerxError` is caught and printed, and where
    plugins' ``register_commands`` add their commands."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._commands_of = None  # the plugin registry whose commands are attached
        self._plugin_commands: list[str] = []

    def main(self, args=None, *rest, **kwargs):
        from merx.plugins import local_plugins_switched_off

        # Before parsing: `merx --help` lists plugin commands, and loading them may warn.
        _plugin_warnings_to_stderr()
        # Read from the raw arguments, not from a parsed option: parsing itself looks up the
        # subcommand and runs --help's callback, and both load the plugins. Held for this
        # invocation only, so that a process calling merx several times is not switched for good.
        switch = _asks_for_no_local_plugins(sys.argv[1:] if args is None else args)
        with local_plugins_switched_off(switch):
            return super().main(args, *rest, **kwargs)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MerxError as exc:
            report_error(exc)
            ctx.exit(exc.exit_code)

    def list_commands(self, ctx):
        self._attach_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        if name not in self.commands or name in self._plugin_commands:
            self._attach_plugin_commands()
        return super().get_command(ctx, name)

    def _attach_plugin_commands(self) -> None:
        """Call each plugin's ``register_commands`` on its own, so that one that raises loses
        only its own commands (with a warning naming it), and none replaces merx's."""
        from merx.plugins import get_registry

        reg = get_registry()
        # A new registry (another working directory, --plugins-dir, a test) brings its own commands.
        if reg is self._commands_of:
            return
        for name in self._plugin_commands:
            self.commands.pop(name, None)
        self._commands_of = reg
        own = dict(self.commands)
        for impl in reg.pm.hook.register_commands.get_hookimpls():
            origin, _, source = impl.plugin_name.partition(":")
            before = dict(self.commands)
            try:
                impl.function(**{arg: self for arg in impl.argnames if arg == "cli"})
            except Exception as exc:
                self.commands.clear()
                self.commands.update(before)
                reg.warn(f"plugin {source!r} ({origin}) failed in register_commands, so its commands are "
                         f"left out: {type(exc).__name__}: {exc}")
                continue
            replaced = sorted(name for name, cmd in own.items() if self.commands.get(name) is not cmd)
            if replaced:
                self.commands.update({name: own[name] for name in replaced})
                reg.warn(f"plugin {source!r} ({origin}) tried to replace merx's own command(s) "
                         f"{', '.join(replaced)}; kept merx's. Give the plugin's command another name.")
        self._plugin_commands = [name for name in self.commands if name not in own]


def _use_plugin_dirs(ctx, param, value):
    # Eager, so that it applies before the subcommand is looked up: a command that a plugin in
    # --plugins-dir registers must be found.
    from merx.plugins import set_plugin_dirs

    set_plugin_dirs(list(value))


def _asks_for_no_local_plugins(args) -> bool:
    """Whether ``--no-local-plugins`` is anywhere before ``--``: misplaced after the subcommand
    it still switches local plugins off (and the subcommand then refuses the option), rather
    than being noticed only after their code ran."""
    for arg in args:
        if arg == "--":
            return False
        if str(arg).partition("=")[0] == "--no-local-plugins":
            return True
    return False


@click.group(cls=MerxGroup)
@click.version_option(__version__, prog_name="merx")
@click.option("--plugins-dir", multiple=True, type=click.Path(file_okay=False), is_eager=True,
              expose_value=False, callback=_use_plugin_dirs,
              help="Extra folder of local plugin files (besides ./plugins).")
# MerxGroup.main reads this switch before click parses anything; the option is here for --help.
@click.option("--no-local-plugins", is_flag=True, expose_value=False,
              help="Do not load ./plugins, --plugins-dir or $MERX_PLUGINS_DIR files.")
def cli():
    """merx: bimodal (audio + lyrics) music emotion recognition experiments.

    Write an experiment as a TOML file, then `merx run FILE`."""


def _attach_command_modules() -> None:
    from merx.commands import MODULES

    for name in MODULES:
        importlib.import_module(name).attach(cli)


_attach_command_modules()


def main():
    cli(prog_name="merx")


if __name__ == "__main__":
    main()
