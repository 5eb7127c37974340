"""A run's checkpoints: what they hold, how they are written so that a file is always whole,
how weights are loaded back, and disk-full errors.

A run folder holds two checkpoints, both overwritten in place (only the last and the best are kept):

``last.pt``
    the whole training state at the end of the latest finished epoch (:meth:`merx.train.Trainer.state_dict`:
    model, optimizer, scheduler, gradient scaler, early stopping, epoch, history, RNG states),
    what ``merx resume`` continues from.
``best.pt``
    the best epoch's weights, written when an epoch improves: ``{"model", "best_epoch",
    "ref_power", "config", "frozen"}``; the run row's ``checkpoint_path`` names it.

Neither holds a frozen tower's weights (a module with ``frozen = True``, such as a frozen
text encoder: 22 M of MiniLM's parameters against a few hundred thousand trained ones). They
are identified instead (``"frozen": {key prefix: the tower's identity}``) and come from the
pretrained model when the model is built; :func:`load_weights` checks that nothing else is
missing. Every checkpoint holds only tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: loading one never runs code.

A checkpoint goes to a temporary file in the same folder, is flushed and fsynced, then
``os.replace`` puts it in place (an atomic rename on one file system). A write that fails (the
disk full, a file-size limit, Ctrl-C, SIGTERM) removes the temporary file, so neither a
truncated checkpoint nor a stray temporary file is left for anyone to load.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path

from merx.errors import DiskFull, RunError

#: File names in a run folder.
LAST, BEST = "last.pt", "best.pt"

#: errnos meaning "no room": a full disk, a file-size limit (RLIMIT_FSIZE), a disk quota.
NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def no_space(exc: BaseException | None) -> OSError | None:
    """The ``OSError`` in ``exc``'s chain (``exc``, its cause, its context, ...) that says the
    write failed for want of room, or None. torch reports a failed write as a RuntimeError of its
    own; the OSError of the file object it wrote to is in that error's context."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full(error: OSError, path: str | os.PathLike | None = None) -> DiskFull:
    """The :class:`~merx.errors.DiskFull` for ``error``, naming ``path`` (else the error's file)."""
    where = path if path is not None else (error.filename or "a file this run writes")
    if error.errno == errno.EFBIG:
        hint = ("a file reached this process's file size limit (ulimit -f, RLIMIT_FSIZE): raise it, "
                "or write elsewhere, and run again")
    else:
        hint = "free space on that file system (df -h), or write elsewhere, and run again"
    return DiskFull(where, hint=hint)


@contextlib.contextmanager
def disk_full_named():
    """Within the block, an error saying the disk is full (or a file-size limit was reached)
    becomes one :class:`~merx.errors.DiskFull` naming the file, whatever raised it."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as exc:
        full = no_space(exc)
        if full is None:
            raise
        raise disk_full(full) from exc


class _Sink:
    """The file torch writes to, remembering the first OSError: torch replaces it by its own error."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data):
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self):
        self.fh.flush()


def save_checkpoint(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically and durably; returns ``path``.

    Raises :class:`~merx.errors.DiskFull` naming ``path`` when the disk is full or a file-size
    limit is reached; any failure leaves whatever was at ``path`` before untouched."""
    import torch

    path = Path(path)
    sink = None
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            sink = _Sink(fh)
            torch.save(obj, sink)
            fh.flush()
            # Before the rename: otherwise a power cut could leave the new name on empty data.
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        full = no_space(sink.error if sink is not None else None) or no_space(exc)
        if full is not None:
            raise disk_full(full, path) from exc
        raise
    return path


def _fsync_folder(folder: Path) -> None:
    # The rename itself is durable only once the folder is; not every system can sync a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- what a checkpoint holds -------------------------------------------------------------------

def frozen_prefixes(model) -> dict[str, str]:
    """``{state_dict key prefix: identity}`` of the model's frozen submodules (``frozen = True``,
    e.g. a frozen text tower): their weights come from the pretrained model, not a checkpoint.
    The identity is the module's ``identity`` (a text tower's model name, version and settings)."""
    out = {}
    for name, module in model.named_modules():
        if name and getattr(module, "frozen", False) is True and not any(name.startswith(p) for p in out):
            out[name + "."] = str(getattr(module, "identity", type(module).__name__))
    return out


def trained_state(model) -> dict:
    """``model.state_dict()`` less the frozen submodules' entries (see :func:`frozen_prefixes`)."""
    prefixes = tuple(frozen_prefixes(model))
    return {k: v for k, v in model.state_dict().items() if not (prefixes and k.startswith(prefixes))}


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """A checkpoint written by merx, loaded with ``weights_only=True`` (no code runs); a missing,
    unreadable or foreign file (no ``model`` weights) is a ``RunError`` naming it."""
    import torch

    try:
        checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"checkpoint {path} does not exist", exit_code=1) from None
    except Exception as exc:  # pickle errors, a truncated file written by something else
        raise RunError(f"cannot read the checkpoint {path}: {type(exc).__name__}: {exc}", exit_code=1) from exc
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise RunError(f"{path} is not a merx checkpoint (no 'model' weights)", exit_code=1)
    return checkpoint


def same_tower(recorded: str, current: str) -> bool:
    """Whether a frozen tower's ``current`` identity is the one a checkpoint ``recorded``. A hub
    model's identity has named its commit (``name@<sha>|...``) only since transformers 5 stopped
    recording it; an identity recorded without one matches the same text with any commit."""
    return recorded == current or ("@" not in recorded.split("|")[0]
                                   and re.sub(r"@[0-9a-f]{40}(?=\|)", "", current, count=1) == recorded)


def load_weights(model, path_or_checkpoint, map_location=None) -> dict:
    """Load a checkpoint's ``model`` weights into ``model`` (built with its pretrained frozen
    towers) and return the checkpoint. Only the frozen towers' keys may be missing, and only
    when their identity matches the one the checkpoint recorded; anything else is a ``RunError``
    naming the keys (a model built from another config)."""
    ckpt = path_or_checkpoint if isinstance(path_or_checkpoint, dict) else load_checkpoint(path_or_checkpoint,
                                                                                            map_location)
    where = "the checkpoint" if isinstance(path_or_checkpoint, dict) else str(path_or_checkpoint)
    frozen = frozen_prefixes(model)
    recorded = ckpt.get("frozen") or {}
    for prefix, identity in recorded.items():
        if prefix in frozen and not same_tower(identity, frozen[prefix]):
            raise RunError(f"{where} was trained on top of the frozen {prefix.rstrip('.')} {identity!r}, but this "
                           f"model's is {frozen[prefix]!r}: build the model from the run's own config", exit_code=1)
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as exc:  # shapes differ
        raise RunError(f"{where} does not fit this model: {exc}", exit_code=1) from None
    missing = [k for k in missing if not k.startswith(tuple(frozen))]
    if missing or unexpected:
        parts = [f"{len(missing)} missing (e.g. {', '.join(missing[:3])})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})" if unexpected else ""]
        raise RunError(f"{where} does not fit this model: weights " + " and ".join(p for p in parts if p)
                       + "; build the model from the run's own config", exit_code=1)
    return ckpt


class RunCheckpoints:
    """The checkpoints of one run, in ``folder``: :data:`LAST` and :data:`BEST` (module docstring).

    ``extra`` goes into every best checkpoint beside the weights (``ref_power``, ``config``);
    ``on_write(kind, path)`` is called after each file is written ("last" or "best"), so that the
    run can list it in the store's artifacts."""

    def __init__(self, folder: str | os.PathLike, extra: dict | None = None, on_write=None):
        self.folder = Path(folder)
        self.extra = dict(extra or {})
        self.on_write = on_write

    @property
    def last(self) -> Path:
        return self.folder / LAST

    @property
    def best(self) -> Path:
        return self.folder / BEST

    def save_last(self, state: dict) -> Path:
        return self._write("last", self.last, state)

    def save_best(self, model, epoch: int | None) -> Path:
        """The model's weights as the best epoch's, frozen towers left out (epoch None: no epoch
        was best, and these are the weights the run ends with)."""
        ckpt = {"model": trained_state(model), "best_epoch": None if epoch is None else int(epoch),
                "frozen": frozen_prefixes(model),
                **self.extra}
        return self._write("best", self.best, ckpt)

    def restore_best(self, model) -> dict | None:
        """Put the best weights back into ``model``; the checkpoint, or None when there is none."""
        if not self.best.exists():
            return None
        return load_weights(model, self.best)

    def _write(self, kind: str, path: Path, obj) -> Path:
        save_checkpoint(obj, path)
        if self.on_write is not None:
            self.on_write(kind, path)
        return path
