"""Reading an experiment file for a command."""

from __future__ import annotations


def load_plan(file, sets=(), seeds=None, db=None):
    """The runs of ``file``: a plain file is one cell and one seed; ``[sweep]``/seeds give more."""
    from merx.sweep import load_plan as _load_plan

    return _load_plan(file, list(sets), seeds)


def load_config(file, sets=(), db=None) -> dict:
    """The resolved config of ``file`` (for a sweep, its first cell and seed)."""
    return load_plan(file, sets, db=db).cells[0].configs[0]
