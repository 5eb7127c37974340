"""Training and evaluation: one loop that reads top to bottom (in the spirit of nanoGPT).

What it fixes from the dissertation's notebooks:

* the best weights are written to disk when an epoch improves (the notebooks'
  ``state_dict().copy()`` was a shallow copy of the live tensors, so the "restored best model"
  was the last one; a clone on the GPU would be a second copy of the model) and put back into
  the model at the end of :meth:`Trainer.fit`, before any test evaluation;
* every epoch ends with a checkpoint of the whole training state (:meth:`Trainer.state_dict`),
  from which :meth:`Trainer.load_state_dict` continues exactly where it stopped;
* the reported best epoch is the epoch that was best, not ``stop epoch - patience``;
* gradients are clipped by norm, and the norm before and after clipping is recorded;
* each part of the model (audio, text, fusion, head) has its own learning rate.

A model is an ``nn.Module`` called as ``model(batch) -> Tensor[B, out]`` with
``parts() -> {"audio"|"text"|"fusion"|"head": [trainable parameters]}``. A batch is a dict of
tensors plus ``"song_id"`` (a list of str); ``batch["target"]`` is ``FloatTensor[B, 2]``
(valence, arousal) for regression and ``LongTensor[B]`` (0..3 = Q1..Q4) for classification.
"""

from __future__ import annotations

import difflib
import math
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from merx.checkpoints import RunCheckpoints, frozen_prefixes, load_weights, trained_state
from merx.config import ConfigError
from merx.config.settings import TrainSettings
from merx.data.songs import QUADRANTS

# Device and seeding helpers live in merx.devices; re-exported so a run needs one import.
from merx.devices import (
    amp_settings,
    deterministic_algorithms,
    rng_state,
    seed_everything,
    select_device,
    set_rng_state,
    worker_init_fn,
)
from merx.early_stopping import EarlyStopping
from merx.errors import TrainingDiverged
from merx.kernels import cudnn_autotune, forward_of, use_channels_last
from merx.metrics import classification_metrics, quadrant_indices, regression_metrics
from merx.optim import build_optimizer, build_scheduler  # re-exported: a run needs one import

__all__ = ["Trainer", "FitResult", "TrainingDiverged", "evaluate", "loss_fn", "build_optimizer",
           "build_scheduler", "available_monitors", "to_device", "amp_settings", "deterministic_algorithms",
           "seed_everything", "select_device", "worker_init_fn"]


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` did. ``best_epoch`` is 1-based and the model holds that epoch's
    weights; it is None when no epoch had a finite monitored value (``no_finite_monitor``), or when
    a resumed run's best weights were gone and no later epoch improved on them, and the model then
    holds the last epoch's weights (a line in ``notes`` says which).

    ``stop_reason`` says why training stopped before ``epochs`` (None if it did not); ``notes``
    are the lines a run should keep with its results (a non-finite monitored value)."""

    best_epoch: int | None
    best_score: float
    epochs_run: int
    stopped_early: bool
    monitor: str
    history: list[dict] = field(default_factory=list)
    stop_reason: str | None = None
    notes: list[str] = field(default_factory=list)
    #: True when no epoch's monitored value was finite: "best" means nothing for this run.
    no_finite_monitor: bool = False


# -- pieces ---------------------------------------------------------------------------------

def to_device(obj, device: torch.device):
    """Move the tensors of a (nested) batch to ``device``; everything else stays as it is."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in obj):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def loss_fn(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE on (valence, arousal) for regression, cross-entropy on quadrant logits otherwise."""
    output = output.float()  # the loss in full precision, whatever autocast produced
    if task == "regression":
        if output.shape != target.shape:
            raise ValueError(f"regression output has shape {tuple(output.shape)} but the target "
                             f"{tuple(target.shape)}: the head must output 2 values (valence, arousal)")
        return F.mse_loss(output, target.float())
    if task == "classification":
        return F.cross_entropy(output, target.long())
    raise ValueError(f"unknown task {task!r}: expected 'regression' or 'classification'")


def available_monitors(task: str) -> list[str]:
    """The validation metrics early stopping can watch for ``task`` (:func:`merx.metrics.monitors`)."""
    from merx.metrics import monitors

    return monitors(task)


# -- evaluation -----------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, task: str, device: torch.device, amp: bool = False,
             forward: Callable | None = None) -> tuple[dict[str, float], list[dict]]:
    """Loss and task metrics over ``loader``, and one prediction record per song.

    ``forward`` replaces ``model(batch)`` (the trainer's compiled forward, ``merx.kernels``).

    Regression records hold song_id, true/pred valence and arousal, and the true/pred quadrant
    those imply; classification records hold song_id, true/pred quadrant and the 4 class
    probabilities. Leaves the model in eval mode."""
    amp, amp_dtype = amp_settings(device, amp)
    model.eval()
    # Outputs, targets and loss sums stay on the device until the last batch: one read, not one per batch.
    outputs, targets, losses, sizes, song_ids = [], [], [], [], []
    for batch in loader:
        batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            output = (forward or model)(batch)
        n = len(batch["target"])
        losses.append(loss_fn(task, output, batch["target"]).detach())
        sizes.append(n)
        outputs.append(output.detach().float())
        targets.append(batch["target"])
        song_ids.extend(batch.get("song_id", [None] * n))
    if not outputs:
        raise ValueError("the evaluation loader yielded no batches (is the split empty?)")
    out, target = torch.cat(outputs).cpu().numpy(), torch.cat(targets).cpu().numpy()
    loss_sum = sum(loss * n for loss, n in zip(torch.stack(losses).tolist(), sizes, strict=True))
    metrics = {"loss": loss_sum / len(target)}
    if task == "regression":
        metrics.update(regression_metrics(target, out))
        true_q, pred_q = quadrant_indices(target), quadrant_indices(out)
        predictions = [{"song_id": sid, "true_valence": float(t[0]), "true_arousal": float(t[1]),
                        "pred_valence": float(p[0]), "pred_arousal": float(p[1]),
                        "true_quadrant": QUADRANTS[tq], "pred_quadrant": QUADRANTS[pq]}
                       for sid, t, p, tq, pq in zip(song_ids, target, out, true_q, pred_q, strict=True)]
    else:
        probs = torch.softmax(torch.from_numpy(out), dim=1).numpy()
        pred = probs.argmax(axis=1)
        metrics.update(classification_metrics(target, pred))
        predictions = [{"song_id": sid, "true_quadrant": QUADRANTS[int(t)], "pred_quadrant": QUADRANTS[int(p)],
                        "probs": [float(x) for x in pr]}
                       for sid, t, p, pr in zip(song_ids, target, pred, probs, strict=True)]
    return metrics, predictions


# -- training -------------------------------------------------------------------------------

class Trainer:
    """Trains ``model`` on ``train_loader``, validating on ``val_loader`` after every epoch.

    ``settings`` is the experiment's ``[train]`` section. ``on_epoch(epoch, metrics)``
    is called as soon as an epoch is done (the caller stores it, so a crash keeps finished
    epochs). Attributes worth reading after an exception: ``history``, ``early_stopping``.

    ``scaler`` replaces the ``GradScaler`` the trainer would make (enabled only for fp16 on
    CUDA), so that the loss-scaled path can be exercised on a CPU.

    ``checkpoints`` (a :class:`merx.checkpoints.RunCheckpoints`) is where the best weights and,
    after every epoch (once ``on_epoch`` has recorded it), the whole state go; without one they go
    to a temporary folder removed when ``fit`` returns. :meth:`load_state_dict` with a ``last.pt``
    makes ``fit`` continue after that checkpoint's epoch."""

    def __init__(self, model: torch.nn.Module, train_loader, val_loader, settings: TrainSettings, task: str,
                 device: torch.device, on_epoch: Callable[[int, dict], None] | None = None,
                 progress: bool = True, scaler: torch.amp.GradScaler | None = None,
                 checkpoints: RunCheckpoints | None = None):
        self.model = model.to(device)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.settings, self.task, self.device = settings, task, torch.device(device)
        self.on_epoch, self.progress = on_epoch, progress

        es = settings.early_stopping
        monitors = available_monitors(task)
        if es.monitor not in monitors:
            close = difflib.get_close_matches(es.monitor, monitors, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"cannot monitor {es.monitor!r} for task {task!r}{hint}; "
                              f"available: {', '.join(monitors)}", key="train.early_stopping.monitor")
        self.early_stopping = EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta)

        # The fast kernels (merx.kernels): channels_last on CUDA before the optimizer sees the weights.
        use_channels_last(self.model, self.device, settings.channels_last)
        self.forward = forward_of(self.model, settings.compile)
        self.optimizer = build_optimizer(self.model, settings.lr, settings.optimizer, settings.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, settings.scheduler, settings.epochs)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.amp, self.amp_dtype = amp_settings(self.device, settings.amp)
        # fp16 needs loss scaling against underflow; bf16 and fp32 do not (the scaler is then a no-op).
        self.scaler = scaler if scaler is not None else \
            torch.amp.GradScaler(self.device.type, enabled=self.amp and self.amp_dtype == torch.float16)
        self.history: list[dict] = []
        self.checkpoints = checkpoints
        self._resume_rng: dict | None = None  # put back right before the next epoch's first draw
        self._restored_epoch: int | None = None  # the best_epoch of the weights fit ended with

    # -- the state a resumed run continues from -------------------------------------------------

    def state_dict(self) -> dict:
        """Everything the next epoch depends on, after the last finished one: the trained weights
        (frozen towers left out), optimizer, scheduler, gradient scaler, early stopping, history
        and the RNG states. Plain tensors, numbers, lists and dicts: ``weights_only`` loadable."""
        return {"epoch": len(self.history), "model": trained_state(self.model),
                "frozen": frozen_prefixes(self.model), "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "early_stopping": self.early_stopping.state_dict(),
                "history": [dict(h) for h in self.history], "rng": rng_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (:meth:`state_dict`, e.g. a run's ``last.pt``): ``fit`` then
        trains epoch ``state["epoch"] + 1`` onwards, with the data order and random draws of a
        run that was never stopped. The model must be built as the run built it."""
        load_weights(self.model, state)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.history = [dict(h) for h in state["history"]]
        if len(self.history) != state["epoch"]:
            raise ValueError(f"checkpoint of epoch {state['epoch']} holds {len(self.history)} epochs of history")
        for loader in (self.train_loader, self.val_loader):
            if hasattr(loader, "epoch"):  # the next epoch served is the next one trained
                loader.epoch = state["epoch"]
        self._resume_rng = state["rng"]

    # -- training ----------------------------------------------------------------------------

    def fit(self) -> FitResult:
        """Train until ``epochs`` or early stopping; the model ends with the best epoch's weights.

        With ``settings.deterministic`` torch runs deterministic algorithms for the whole fit,
        and its previous settings are put back afterwards (:func:`deterministic_algorithms`)."""
        with deterministic_algorithms(self.settings.deterministic), \
                cudnn_autotune(self.device, self.settings.deterministic), \
                tempfile.TemporaryDirectory(prefix="merx-fit-") as scratch:
            if self.checkpoints is None:  # the best weights still go to disk, just not to be kept
                self.checkpoints = RunCheckpoints(scratch)
                scratch_only = True
            else:
                scratch_only = False
            try:
                self._fit_epochs()
            except RuntimeError as exc:
                if self.settings.deterministic and " does not have a deterministic implementation" in str(exc):
                    op = str(exc).split(" does not have")[0]
                    raise ConfigError(f"train.deterministic = true, but {op} has no deterministic implementation "
                                      f"on {self.device.type}: set train.deterministic = false, or use a model "
                                      "without it", key="train.deterministic") from exc
                raise
            finally:
                if scratch_only:
                    self.checkpoints = None
        es, epochs, monitor = self.early_stopping, self.settings.epochs, self.early_stopping.monitor
        notes = [es.stop_reason] if es.stopped_on_non_finite else []
        best_epoch = es.best_epoch
        if best_epoch is not None and self._restored_epoch is None:
            # Resumed with no best.pt to read (a copied run whose source's file was deleted, a file
            # removed by hand) and no later epoch better: the model holds the last epoch's weights,
            # which must not be reported as the best epoch's.
            best_epoch = None
            notes.append(f"the best epoch ({es.best_epoch}) was before this run resumed and its weights were gone "
                         f"(no best.pt to read), and no later epoch improved on it: there is no best epoch, and "
                         f"the model keeps the weights of the last epoch ({len(self.history)}); its results are "
                         "not a model selected on validation")
            warnings.warn(notes[-1], RuntimeWarning, stacklevel=2)
        elif best_epoch is not None and self._restored_epoch != best_epoch:
            # A resumed run whose process died after writing best.pt for an epoch and before that
            # epoch's last.pt: the epoch was trained again and, off a CPU, can come out differently.
            notes.append(f"the best weights on disk are epoch {self._restored_epoch}'s, not those of the best "
                         f"epoch {es.best_epoch}: this resumed run trained epoch {self._restored_epoch} twice and the "
                         "second time differently (nondeterministic kernels); its results use those weights")
            warnings.warn(notes[-1], RuntimeWarning, stacklevel=2)
        if es.best_epoch is None and self.history:
            notes.append(f"no epoch had a finite {monitor}: there is no best epoch, and the model keeps the "
                         f"weights of the last epoch ({len(self.history)}); its results are not a model "
                         "selected on validation")
            warnings.warn(notes[-1], RuntimeWarning, stacklevel=2)
        stopped_early = es.should_stop and len(self.history) < epochs
        return FitResult(best_epoch=best_epoch, best_score=es.best_score, epochs_run=len(self.history),
                         stopped_early=stopped_early, monitor=monitor, history=self.history,
                         stop_reason=es.stop_reason if stopped_early else None, notes=notes,
                         no_finite_monitor=es.best_epoch is None and bool(self.history))

    def _fit_epochs(self) -> None:
        epochs, monitor = self.settings.epochs, self.early_stopping.monitor
        es, done = self.early_stopping, len(self.history)
        if done and not math.isfinite(self.history[-1]["val_loss"]):  # resumed after a divergence: it still is
            raise TrainingDiverged(done, None, "validation loss", self.history[-1]["val_loss"])
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
            self._resume_rng = None
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
        try:
            with Progress(*columns, disable=not self.progress) as bar:
                for epoch in range(done + 1, epochs + 1):
                    if es.should_stop:  # a resumed run that had stopped early: nothing left to train
                        break
                    t0 = time.perf_counter()
                    lrs = {f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups}
                    task_id = bar.add_task(f"epoch {epoch}/{epochs}", total=_length(self.train_loader), info="")
                    train_stats = self.train_one_epoch(epoch, bar, task_id)
                    val, _ = evaluate(self.model, self.val_loader, self.task, self.device, self.amp,
                                      forward=self.forward)
                    metrics = {**train_stats, **{f"val_{k}": v for k, v in val.items()}, **lrs,
                               "epoch_seconds": time.perf_counter() - t0}
                    self.history.append(metrics)

                    # Bookkeeping first, so that whatever happens in on_epoch this epoch counts.
                    is_best = es.update(epoch, metrics[monitor])
                    if self.scheduler is not None:
                        self.scheduler.step()
                    bar.update(task_id, info=f"loss {metrics['train_loss']:.4f}  {monitor} "
                                             f"{metrics[monitor]:.4f}  best {es.best_score:.4f} @ {es.best_epoch}")
                    try:  # the weights this epoch trained, before anything else can touch them
                        if is_best:
                            self.checkpoints.save_best(self.model, epoch)
                    finally:  # recorded even when that write fails (a full disk): the epoch is done
                        if self.on_epoch is not None:
                            self.on_epoch(epoch, metrics)
                    # After recording: a resumed run trains again an epoch recorded after its last checkpoint.
                    self.checkpoints.save_last(self.state_dict())
                    if not math.isfinite(metrics["val_loss"]):
                        raise TrainingDiverged(epoch, None, "validation loss", metrics["val_loss"])
        finally:
            # Also on KeyboardInterrupt or divergence: leave the model at its best epoch.
            best = self.checkpoints.restore_best(self.model)
            self._restored_epoch = None if best is None else best.get("best_epoch")

    def train_one_epoch(self, epoch: int, bar: Progress | None = None, task_id=None) -> dict[str, float]:
        """One pass over the training data; returns train_loss and the gradient-norm statistics.

        No step reads a value back to the host: on an asynchronous device (CUDA, MPS) each
        ``.item()`` would make the CPU wait for the GPU to drain its queue before it can launch
        the next step's kernels. Each step's loss and gradient norm stay on the device and are
        read once, after the last step (:meth:`_epoch_metrics`), which also raises
        ``TrainingDiverged`` naming the first step whose loss or norm was not finite. Until then
        the weights are protected on the device (:meth:`_train_step`)."""
        self.model.train()
        # Every step so far had a finite loss (and norm): a device tensor, so checking it needs no sync.
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        # The weights before the current step, to put back after a non-finite one (see _train_step).
        before = [torch.empty_like(p) for p in self.params]
        steps, sizes = [], []
        for batch in self.train_loader:
            batch = to_device(batch, self.device)
            values, finite = self._train_step(batch, finite, before)
            steps.append(values)
            sizes.append(len(batch["target"]))  # the shape is known on the host: no sync
            if bar is not None:  # no running loss on the bar: printing it would be a sync per step
                bar.update(task_id, advance=1)
        if not steps:
            raise ValueError("the training loader yielded no batches (is the training split empty?)")
        return self._epoch_metrics(epoch, torch.stack(steps).tolist(), sizes)  # the epoch's one read

    def _train_step(self, batch: dict, finite: torch.Tensor, before: list[torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward, clip and optimizer step on one batch, without a host sync.

        Returns device tensors only: ``[loss, gradient norm before clipping]`` and the updated
        all-steps-finite flag. A step whose loss (or, without loss scaling, gradient norm) is not
        finite must not change the weights, and neither may any later step of the epoch, so that
        when :meth:`_epoch_metrics` raises, the model holds the weights from before the first bad
        step (as when the loop stopped right there). Deciding that on the host would be a sync,
        and zeroing the gradients would not do: NaN * 0 is NaN, and Adam moves the weights by its
        momentum (and weight decay) even on a zero gradient. So the weights are copied before
        the optimizer step and put back with ``torch.where`` on the flag: one copy and one select
        over the trainable parameters per step, whatever the optimizer. The optimizer's own state
        may take NaN from a bad step; nothing steps with it again, since the epoch then ends in
        ``TrainingDiverged``. Buffers (BatchNorm statistics) are not protected; as before, the
        fit puts back the best epoch's whole state when a divergence ends it."""
        optimizer, scaler = self.optimizer, self.scaler
        max_norm = self.settings.grad_clip or math.inf  # 0 = off; clipping at inf just measures the norm
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            output = self.forward(batch)
        loss = loss_fn(self.task, output, batch["target"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip and measure the true gradients, not the scaled ones
        # A device tensor (error_if_nonfinite would read it on the host); NaN/inf when the gradient is.
        pre = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        ok = torch.isfinite(loss)
        if not scaler.is_enabled():  # with fp16 scaling an overflowing gradient just skips the step
            ok = ok & torch.isfinite(pre)
        finite = finite & ok
        with torch.no_grad():
            torch._foreach_copy_(before, self.params)
        # With fp16 loss scaling, scaler.step reads its overflow flag on the host (torch's own
        # sync, one per step, for optimizers that are not fused); bf16 and fp32 have no scaler.
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            for p, old in zip(self.params, before, strict=True):
                torch.where(finite, p, old, out=p)
        # (clip_grad_norm_ returns a CPU zero when no parameter has a gradient: hence the device.)
        return torch.stack([loss.detach(), pre.detach().to(loss.device, loss.dtype)]), finite

    def _epoch_metrics(self, epoch: int, steps: list[list[float]], sizes: list[int]) -> dict[str, float]:
        """The epoch's metrics from each step's ``[loss, pre-clip norm]`` (read once, on the host).

        Raises ``TrainingDiverged`` for the first step whose loss (or, without loss scaling,
        gradient norm) is not finite. The post-clip norm is derived, not measured again:
        ``clip_grad_norm_`` scales the gradients by ``min(1, max_norm / (norm + 1e-6))``."""
        scaled = self.scaler.is_enabled()
        for step, (loss, pre) in enumerate(steps, start=1):
            if not math.isfinite(loss):
                raise TrainingDiverged(epoch, step, "training loss", loss)
            if not scaled and not math.isfinite(pre):
                raise TrainingDiverged(epoch, step, "gradient norm", pre)
        max_norm = self.settings.grad_clip or math.inf
        pre_norms = [pre for _, pre in steps if math.isfinite(pre)]  # fp16 overflow steps were skipped
        post_norms = [pre * min(1.0, max_norm / (pre + 1e-6)) for pre in pre_norms]
        return {
            "train_loss": sum(loss * n for (loss, _), n in zip(steps, sizes, strict=True)) / sum(sizes),
            "grad_norm_pre_clip": float(np.mean(pre_norms)) if pre_norms else math.nan,
            "grad_norm_pre_clip_max": max(pre_norms, default=math.nan),
            "grad_norm_post_clip": float(np.mean(post_norms)) if post_norms else math.nan,
            "grad_norm_post_clip_max": max(post_norms, default=math.nan),
        }


def _length(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:  # an iterable dataset may not know its length
        return None
