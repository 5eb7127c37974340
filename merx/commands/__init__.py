"""The commands of ``merx``, one module per group of commands.

Each module defines its click commands and adds them to the group in ``attach(cli)``;
``merx.cli`` calls every module's ``attach`` at import. Keep heavy imports inside the command
functions: ``merx --help`` imports every module listed here. Options that several commands
share are in ``merx.commands.options``; printing helpers in ``merx.commands.output``."""

MODULES = [
    "merx.commands.run",      # run, resume
    "merx.commands.data",     # prepare
    "merx.commands.runs",     # runs, show, tag, note
    "merx.commands.cleanup",  # rm, gc
    "merx.commands.compare",  # compare, report, export
    "merx.commands.plugin",   # list-plugins, plugin new / check
    "merx.commands.config",   # config
    "merx.commands.db",       # db copy
    "merx.commands.predict",  # predict
    "merx.commands.model",    # model export
]
