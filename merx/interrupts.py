"""SIGTERM handled like Ctrl-C, and the message saying what an interrupt left recorded.

``timeout``, Slurm, ``docker stop`` and systemd stop a process with SIGTERM, whose default
action kills it on the spot: no ``finally`` runs, so a run would stay ``running`` in the results
database forever and feature-extraction workers would be left behind. While
:func:`sigterm_as_interrupt` is active, SIGTERM instead raises :class:`Terminated` in the main
thread, a ``KeyboardInterrupt``, so every path that cleans up after Ctrl-C cleans up after it too.

Exit statuses are the shell's, 128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

from merx.errors import Interrupted

__all__ = ["Terminated", "interrupted_error", "sigterm_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised in the main thread where Ctrl-C raises ``KeyboardInterrupt``."""

    signum = signal.SIGTERM


_raised = False  # one SIGTERM per outermost context becomes an exception; repeats are ignored


def _on_sigterm(signum, frame):
    global _raised
    # A second SIGTERM (impatient users, process managers repeating it) would otherwise land in
    # the except blocks recording the first one and leave the run 'running' after all.
    if _raised:
        return
    _raised = True
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated`; the previous handler is put back after.

    Nested uses share the outermost one. Where SIGTERM had its default action before, a
    :class:`Terminated` that leaves the block ends the process with SIGTERM after all, once the
    block's own clean-up ran: the caller asked for the default, only later. A SIGTERM that was
    ignored stays ignored, and outside the main thread (where Python cannot handle signals) the
    block changes nothing."""
    global _raised
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (_on_sigterm, signal.SIG_IGN):
        yield
        return
    _raised = False
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    except Terminated:
        _restore(previous)
        if previous in (signal.SIG_DFL, None):
            for stream in (sys.stdout, sys.stderr):  # what was printed still reaches its reader
                with contextlib.suppress(Exception):
                    stream.flush()
            signal.raise_signal(signal.SIGTERM)
        raise
    finally:
        _restore(previous)


def _restore(previous) -> None:
    global _raised
    # None: a handler installed outside Python; SIG_DFL is the closest we can put back.
    signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    _raised = False


def interrupted_error(exc: KeyboardInterrupt, recorded: str, not_recorded: str) -> Interrupted:
    """The :class:`~merx.errors.Interrupted` for Ctrl-C (exit 130) or SIGTERM (exit 143).

    ``recorded`` is said when ``exc`` carries the ``run_id`` that ``merx.pipeline.run`` sets
    once it recorded the run as interrupted (``{run}`` stands for ``run<id>``); ``not_recorded``
    when the interrupt came before the run existed (while the data or features were prepared)."""
    term = isinstance(exc, Terminated)
    what = "SIGTERM" if term else "Ctrl-C"
    run_id = getattr(exc, "run_id", None)
    detail = recorded.format(run=f"run{run_id}") if run_id is not None else not_recorded
    return Interrupted(f"interrupted by {what}: {detail}", exit_code=143 if term else 130)
