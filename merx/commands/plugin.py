"""CLI commands: ``merx plugin new`` (write a plugin to start from) and ``merx plugin check``."""

import click

from merx.hookspecs import KINDS


def attach(cli):
    @cli.group("plugin")
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
        from merx.cli import _console, fail
        from merx.scaffold import ScaffoldError, new_plugin, normalize_kind

        try:
            written = new_plugin(kind, name, folder, package=package)
        except ScaffoldError as exc:
            fail(str(exc), 2)
        kind = normalize_kind(kind)
        console = _console()
        for path in written:
            console.print(f"wrote {path}")
        test = next(p for p in written if p.name.startswith("test_"))
        steps = ([f"pip install -e {written[0].parent}   # makes the entry point known to merx"] if package else [])
        steps += [f"python -m pytest {test}",
                  f"merx list-plugins --kind {kind}",
                  f"in an experiment: [{KINDS[kind].table}] name = \"{name}\""]
        console.print("next:\n" + "\n".join(f"  {s}" for s in steps), highlight=False, markup=False)

    @plugin_group.command("check")
    @click.argument("kind")
    @click.argument("name")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                  help="A setting of the plugin (repeatable), read as TOML like `merx run --set`.")
    def check_cmd(kind, name, sets):
        """Run merx's plugin test kit (merx.testing) on the registered KIND plugin NAME."""
        from merx.cli import _console, fail
        from merx.config import ConfigError, parse_set
        from merx.scaffold import ScaffoldError, normalize_kind
        from merx.testing import PluginCheckError, check_audio_tower, check_fusion, check_text_tower

        checks = {"fusions": check_fusion, "audio_towers": check_audio_tower, "text_towers": check_text_tower}
        try:
            kind = normalize_kind(kind)
            settings = dict(parse_set(s) for s in sets)
        except (ScaffoldError, ConfigError) as exc:
            fail(str(exc), 2)
        if kind not in checks:
            fail(f"the test kit checks {', '.join(KINDS[k].singular for k in checks)}; not {KINDS[kind].singular}", 2)
        try:
            report = checks[kind](name, **settings)
        except PluginCheckError as exc:
            fail(str(exc), 1)
        _console().print(str(report), highlight=False, markup=False)
