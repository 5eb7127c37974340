"""Every error merx raises for the user to fix, under one base with an exit status.

The CLI catches :class:`MerxError` in one place (the click group's ``invoke``) and prints it as
one line (``error: ...``), plus a ``hint:`` line when the error carries one, then exits with the
error's ``exit_code`` -- the way click's own ``ClickException`` carries ``exit_code``. Anything
else that escapes is a bug in merx and keeps its traceback.

Exit codes: 2 for what the user must fix before trying again (the experiment file, a command's
arguments, a plugin choice, where the data or the database is); 1 for a run that started and
failed (a diverged loss, a plugin's own code raising); 130 for Ctrl-C and 143 for SIGTERM
(128 + the signal number, as shells report them).

Modules keep light imports here: this file is imported on the CLI's start-up path.
"""

from __future__ import annotations


class MerxError(Exception):
    """Base of every error meant for the user: a message naming the problem and the fix."""

    exit_code: int = 1

    def __init__(self, message: str = "", *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(MerxError):
    """A command's arguments or options cannot be used as given."""

    exit_code = 2


class ConfigError(MerxError):
    """A problem with an experiment file or a ``--set`` option; names the file (or option) and key."""

    exit_code = 2

    def __init__(self, message: str, file: str | None = None, key: str | None = None, *,
                 hint: str | None = None):
        self.message, self.file, self.key = message, file, key
        where = ": ".join(x for x in (file, key) if x)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)


class PluginError(MerxError):
    """A plugin cannot be used: unknown name, contested name, or its factory failed."""

    exit_code = 2


class UnknownPlugin(PluginError, KeyError):
    """No plugin of that kind and name is installed."""

    def __init__(self, kind: str, name: str, available: str, message: str | None = None):
        self.kind, self.name, self.available = kind, name, available
        from merx.hookspecs import KINDS

        label = KINDS[kind].label if kind in KINDS else kind.replace("_", " ")
        super().__init__(message or f"unknown {label} {name!r}; available: {available}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class PluginBuildError(PluginError):
    """A plugin's factory failed or returned something merx cannot use; names the plugin."""


class PluginRuntimeError(MerxError):
    """A plugin's own code failed while merx used it (a forward pass, an augmentation).

    Exit 1: the experiment file is fine; the plugin (or its settings) is not. The message names
    the plugin, its origin (distribution and version, or file) and points at ``merx plugin check``."""

    exit_code = 1


class DataSourceError(MerxError):
    """The dataset is missing or not laid out as expected; the message says what to do."""

    exit_code = 2


class SplitOverlapError(DataSourceError):
    """The same song is in more than one split."""


class MissingExtra(MerxError):
    """An optional part of merx is asked for, and the extra that installs its library is not:
    names what needs it, the missing library and the extra's install command (one wording for
    every extra: ``ray``, ``slurm``, ``postgres``)."""

    exit_code = 2

    def __init__(self, what: str, library: str, extra: str):
        self.what, self.library, self.extra = what, library, extra
        super().__init__(f"{what} needs {library}, which is not installed", hint=f"pip install 'merx[{extra}]'")


class StoreError(MerxError):
    """A problem with the results database that the user can fix (wrong file, newer schema, ...)."""

    exit_code = 2


class CompareError(MerxError):
    """Targets of ``compare``, ``report`` or ``export`` that cannot be resolved or compared."""

    exit_code = 2


class RunError(MerxError):
    """A problem that stops a run before or during training, with a message for the user."""

    exit_code = 2


class PredictError(MerxError):
    """A run or model folder that cannot be used to predict (no checkpoint, a missing plugin, a
    folder from a newer merx); names the run or folder and how to get a usable model."""

    exit_code = 2


class TrainingDiverged(RunError):
    """The loss (or the gradient) became NaN or infinite; ``epoch`` and ``step`` say where."""

    exit_code = 1

    def __init__(self, epoch: int, step: int | None, what: str, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        where = f"epoch {epoch}, step {step}" if step is not None else f"epoch {epoch}, validation"
        super().__init__(f"training diverged at {where}: the {what} is {value}. Lower the learning "
                         "rate (train.lr), enable gradient clipping (train.grad_clip, e.g. 1.0), "
                         "or check the inputs and targets for NaN/inf values.")


class DiskFull(RunError):
    """A write failed for want of room: the disk is full (ENOSPC) or a file reached this process's
    size limit (EFBIG, ``ulimit -f``). Exit 1: the experiment is fine, the machine is not."""

    exit_code = 1

    def __init__(self, path, *, hint: str | None = None):
        self.path = str(path)
        super().__init__(f"no space left on device ({self.path})", hint=hint)


class Interrupted(MerxError):
    """Ctrl-C or SIGTERM stopped the work; what was recorded says so in the message."""

    exit_code = 130


class ContestedPlugin(PluginError):
    """More than one plugin registers this kind and name; the user picks one by qualified name.

    ``contenders`` is ``[(qualified_name, where), ...]``, e.g.
    ``("lowrank-fusion:lmf", "lowrank-fusion 0.1.0")``, in load order."""

    def __init__(self, kind: str, name: str, contenders: list[tuple[str, str]]):
        self.kind, self.name, self.contenders = kind, name, contenders
        from merx.hookspecs import KINDS

        spec = KINDS.get(kind)
        label = spec.label if spec else kind.replace("_", " ")
        qualified = [q for q, _ in contenders]
        if len(set(qualified)) < len(qualified):
            # Two local files with the same stem, or a file named like a distribution: no
            # qualified name tells them apart, so only renaming does.
            hint = "two of them share the qualifier before ':'; rename a local plugin file or uninstall one"
        else:
            where = f"[{spec.table}] " if spec and spec.table else ""
            hint = (f"pick one by its qualified name, e.g. {where}name = \"{qualified[0]}\"; "
                    "or uninstall (or rename) the others")
        who = ", ".join(f"{w} as {q!r}" for q, w in contenders)
        super().__init__(f"{label} {name!r} is contested: registered by {who}", hint=hint)
