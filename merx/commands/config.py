"""CLI command: ``merx config`` (the resolved config of an experiment file)."""

from __future__ import annotations

import json

import click

from merx.commands.options import experiment_argument, json_option, set_option
from merx.commands.output import clean


@click.command("config")
@experiment_argument()
@set_option()
@json_option("Print JSON instead of TOML.")
def config_cmd(file, sets, as_json):
    """Print the resolved config of FILE: extends followed, overrides applied, every default filled."""
    from merx.commands.plan import load_plan
    from merx.config import config_hash, to_toml

    plan = load_plan(file, sets)
    cfg = plan.cells[0].configs[0]
    if as_json:
        click.echo(json.dumps(cfg, indent=2))
        return
    click.echo(clean(f"# resolved from {file}; config hash {config_hash(cfg)}"))
    if not plan.is_single:
        click.echo(f"# {plan.size} runs: {len(plan.cells)} cell(s) of {', '.join(plan.keys) or 'this config'}"
                   f" x seeds {plan.seeds}; shown: the first ({plan.cells[0].label}, seed {plan.seeds[0]})")
    click.echo(to_toml(cfg), nl=False)


def attach(cli) -> None:
    cli.add_command(config_cmd)
