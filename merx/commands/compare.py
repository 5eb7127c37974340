"""CLI commands: compare (placeholder until implemented)."""


def attach(cli):
    pass
