"""The tables of the results store (SQLAlchemy Core), and what every column holds.

One row of ``runs`` per ``merx run``; every other table hangs off ``runs.id`` and is removed
with its run (``ON DELETE CASCADE``). Times are UTC ISO 8601 strings
(``2025-03-01T12:00:00.123+00:00``). Metric values that are NaN or infinite are stored as NULL
(a diverged run still records its epochs; NULL is "no number" for every reader). JSON columns
hold UTF-8 JSON text; ``RunStore`` decodes them (and drops the ``_json`` suffix) when reading.

runs
    id               integer, primary key, never reused; shown to users as ``run12``.
    experiment       experiment name (the config's ``name``; defaults to the file's stem).
    experiment_file  path of the experiment TOML the run was started from (null if none).
    description      free text from the config's ``description``.
    config_json      the resolved config: every default filled in, as the run used it.
    config_hash      hash of everything that changes the result (seed included).
    group_hash       the same hash without the seed: runs that differ only by seed share it.
    seed             the seed of python, numpy, torch and the DataLoader workers.
    task             ``regression`` (valence/arousal) or ``classification`` (quadrant).
    status           ``running``, ``completed``, ``failed`` or ``interrupted``. A run whose
                     process died stays ``running``, with every epoch it finished; readers
                     report it ``lost`` (derived, never stored: ``merx.store.liveness``).
    error            the error message of a failed or interrupted run (null otherwise).
    started_at       when the run started (UTC ISO).
    ended_at         when it ended (UTC ISO; null while running or after a hard crash).
    wall_seconds     ended_at - started_at, in seconds.
    device           the torch device it ran on (``cpu``, ``cuda:0``, ``mps``).
    versions_json    versions of python, merx, torch, transformers, librosa, ... (object).
    git_commit       commit of the working directory (``-dirty`` suffix with local changes).
    checkpoint_path  file holding the best epoch's weights.
    best_epoch       the epoch whose weights were restored for the test evaluation.
    epochs_run       epochs trained (fewer than the maximum after early stopping).
    tags_json        the config's ``tags`` (list of strings).
    note             free text a user adds later.
    host             host name of the machine running it (latest attempt, when resumed).
    pid              process id of the process running it, on ``host``.
    heartbeat_at     last sign of life (UTC ISO): after each epoch and every 30 s while running.

run_plugins  (the plugins a run used, and where each came from)
    run_id, kind (``fusions``, ``audio_towers``, ...), name, origin (``built-in``,
    ``local file``, ``distribution``), source (module, file path or distribution name),
    version (distribution version; null for built-in and local plugins).

epochs  (the learning curve, one row per epoch and metric; primary key run_id, epoch, metric)
    run_id, epoch, metric (``train_loss``, ``val_loss``, ``lr_audio``, ``grad_norm_pre_clip``,
    ...), value. Each epoch is committed on its own, so a crash keeps every finished epoch.

metrics  (final metrics of the restored best model; primary key run_id, split, metric)
    run_id, split (``test`` or ``validate``), metric (``valence_mae``, ``macro_f1``, ...), value.

baselines  (the same metrics for trivial predictors; primary key run_id, baseline, metric)
    run_id, baseline (``mean``, ``quadrant_centre``, ``random``, ``majority``), metric, value.

predictions  (one row per evaluated song; primary key run_id, split, song_id)
    run_id, song_id, split, true_valence, true_arousal, pred_valence, pred_arousal (null in
    classification runs), true_quadrant, pred_quadrant (``Q1``..``Q4``), probs_json (class
    probabilities Q1..Q4 of a classification run; null otherwise).

failures  (songs that could not be used, and why)
    run_id, song_id, stage (``data``, ``audio``, ``lyrics``, ``features``, ...), reason, path.

data_notes  (facts about a run's songs worth counting, not failures; primary key run_id, song_id, kind)
    run_id, song_id, kind (``label_disagrees``: the quadrant label differs from the quadrant
    its valence/arousal imply; ``in_hole``: valence or arousal inside MERGE's removed 0.4-0.6
    band), detail (what the labels say).

artifacts  (every file a run wrote; ``merx rm`` deletes them with the run)
    run_id, kind (``last``: the training state ``merx resume`` continues from; ``best``: the
    best epoch's weights), path (absolute).

migrations  (see ``merx.store.migrations``)
    name (the migration function applied), applied_at (UTC ISO).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Short strings that are indexed or part of a key get a length (servers such as MySQL need one).
_Key = sa.String(200)


def _run_fk() -> sa.Column:
    return sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)


runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", _Key, nullable=False),
    sa.Column("experiment_file", sa.Text),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("config_json", sa.Text, nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("group_hash", sa.String(64), nullable=False),
    sa.Column("seed", sa.Integer),
    sa.Column("task", sa.String(40)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("ended_at", sa.String(40)),
    sa.Column("wall_seconds", sa.Double),
    sa.Column("device", sa.String(40)),
    sa.Column("versions_json", sa.Text),
    sa.Column("git_commit", sa.String(80)),
    sa.Column("checkpoint_path", sa.Text),
    sa.Column("best_epoch", sa.Integer),
    sa.Column("epochs_run", sa.Integer),
    sa.Column("tags_json", sa.Text),
    sa.Column("note", sa.Text),
    # m004: liveness (merx.store.liveness)
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("heartbeat_at", sa.String(40)),
    # SQLite: ids are never reused after a delete, so "run12" always means the same run.
    sqlite_autoincrement=True,
)

run_plugins = sa.Table(
    "run_plugins", metadata,
    _run_fk(),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("name", _Key, nullable=False),
    sa.Column("origin", sa.String(40)),
    sa.Column("source", sa.Text),
    sa.Column("version", sa.String(80)),
    sa.Index("ix_run_plugins_run_id", "run_id"),
)

epochs = sa.Table(
    "epochs", metadata,
    _run_fk(),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("metric", _Key, nullable=False),
    sa.Column("value", sa.Double),
    sa.PrimaryKeyConstraint("run_id", "epoch", "metric"),
)

metrics = sa.Table(
    "metrics", metadata,
    _run_fk(),
    sa.Column("split", sa.String(20), nullable=False),
    sa.Column("metric", _Key, nullable=False),
    sa.Column("value", sa.Double),
    sa.PrimaryKeyConstraint("run_id", "split", "metric"),
)

baselines = sa.Table(
    "baselines", metadata,
    _run_fk(),
    sa.Column("baseline", sa.String(60), nullable=False),
    sa.Column("metric", _Key, nullable=False),
    sa.Column("value", sa.Double),
    sa.PrimaryKeyConstraint("run_id", "baseline", "metric"),
)

predictions = sa.Table(
    "predictions", metadata,
    _run_fk(),
    sa.Column("song_id", _Key, nullable=False),
    sa.Column("split", sa.String(20), nullable=False),
    sa.Column("true_valence", sa.Double),
    sa.Column("true_arousal", sa.Double),
    sa.Column("pred_valence", sa.Double),
    sa.Column("pred_arousal", sa.Double),
    sa.Column("true_quadrant", sa.String(4)),
    sa.Column("pred_quadrant", sa.String(4)),
    sa.Column("probs_json", sa.Text),
    sa.PrimaryKeyConstraint("run_id", "split", "song_id"),
)

failures = sa.Table(
    "failures", metadata,
    _run_fk(),
    sa.Column("song_id", _Key, nullable=False),
    sa.Column("stage", sa.String(40), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("path", sa.Text),
    sa.Index("ix_failures_run_id", "run_id"),
)

artifacts = sa.Table(
    "artifacts", metadata,
    _run_fk(),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Index("ix_artifacts_run_id", "run_id"),
)

#: Columns of ``runs`` added by ``m004_liveness`` (m001 creates the table without them).
RUNS_M004_COLUMNS = ("host", "pid", "heartbeat_at")

#: The tables ``m001_initial`` created; tables added later are created by their own migration.
INITIAL_TABLES = (runs, run_plugins, epochs, metrics, baselines, predictions, failures, artifacts)

data_notes = sa.Table(
    "data_notes", metadata,
    _run_fk(),
    sa.Column("song_id", _Key, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("run_id", "song_id", "kind"),
)
