"""Groups of CLI commands beyond the core ones in ``merx.cli``, one module per concern.

Each module defines click commands and attaches them in ``attach(cli)``; ``merx.cli`` calls
every module's ``attach`` at import. Keep heavy imports inside the command functions."""

MODULES = ["merx.commands.compare", "merx.commands.plugin"]
