"""Options that several commands share, declared once so that their names, environment
variables and help read the same everywhere. Each is a decorator factory, used like
``click.option``: ``@db_option()``."""

from __future__ import annotations

import click

#: The run statuses ``--status`` accepts: ``merx.store.STATUSES``, repeated here because the
#: store imports SQLAlchemy and ``merx --help`` must not (tests/test_cli.py keeps them equal).
STATUSES = ("running", "completed", "failed", "interrupted", "lost")


def db_option():
    """``--db PATH|URL`` (or ``$MERX_DB``): the results database a command reads or writes."""
    return click.option("--db", envvar="MERX_DB", default=None, metavar="PATH|URL",
                        help="Results database (file or URL; default results.db, or $MERX_DB).")


def set_option(help: str = "Override a setting (repeatable)."):
    """``--set KEY=VALUE`` (repeatable), read as TOML: the value is ``sets``, a tuple of strings."""
    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=help)


def json_option(help: str = "Print JSON instead of text."):
    """``--json``: the value is ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def strict_option():
    """``--strict``: a model plugin or package installed at another version than the run was
    trained with is an error, not a warning (``merx predict``, ``merx model export``)."""
    return click.option("--strict", is_flag=True, help="A plugin or model package whose installed version differs "
                                                        "from the one trained with is an error, not a warning.")


def experiment_argument(required: bool = True):
    """The experiment TOML file a command reads: the value is ``file``."""
    # A plain string: merx.config reads the file and names every problem (a folder, a missing or
    # binary file) in one line; click's own check would print a three-line usage error instead.
    return click.argument("file", required=required)
