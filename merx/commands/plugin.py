"""CLI commands: plugin (placeholder until implemented)."""


def attach(cli):
    pass
