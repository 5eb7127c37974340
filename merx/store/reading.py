"""Reading runs back: the listing, one run whole, its predictions (``RunStore`` extends ``RunReading``)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import sqlalchemy as sa

from merx.store import schema as t
from merx.store.ids import parse_run_id
from merx.store.liveness import is_lost, with_liveness
from merx.store.rows import DATA_NOTE_KEYS, FAILURE_KEYS, PLUGIN_KEYS, decode_run, nested, to_json
from merx.store.statuses import _check_status
from merx.store.times import time_bound


class RunReading:
    """The reading half of :class:`merx.store.runstore.RunStore`; it uses the store's
    transactions and ``_require`` / ``_not_found``."""

    def list_runs(self, experiment: str | None = None, status: str | None = None, limit: int | None = 20, *,
                  group_hash: str | None = None, config_hash: str | None = None, tag: str | None = None,
                  since: str | None = None, until: str | None = None, sort_metric: str | None = None,
                  ascending: bool = False) -> list[dict]:
        """Runs, newest first, as ``get_run`` decodes them (without epochs, predictions, ...), each
        with ``metrics``: its test metrics ``{metric: value}`` ({} until it has any).

        ``tag`` keeps runs carrying that tag; ``since`` / ``until`` bound ``started_at`` (see
        :func:`time_bound`: ``until="2025-03-01"`` includes that day). ``group_hash``
        may be a prefix. ``sort_metric`` orders by that test metric (``ascending`` or not; runs
        without it last, then newest first) before ``limit`` applies."""
        if status is not None:
            _check_status(status)
        recorded = "running" if status == "lost" else status
        q = sa.select(t.runs)
        for column, value in (("experiment", experiment), ("status", recorded), ("config_hash", config_hash)):
            if value is not None:
                q = q.where(t.runs.c[column] == value)
        if group_hash is not None:
            q = q.where(t.runs.c.group_hash.startswith(group_hash, autoescape=True))
        if tag is not None:
            # tags_json is a JSON list: the tag's own JSON text, quotes included, matches one element.
            q = q.where(t.runs.c.tags_json.contains(json.dumps(str(tag)), autoescape=True))
        if since is not None:
            q = q.where(t.runs.c.started_at >= time_bound(since))
        if until is not None:
            q = q.where(t.runs.c.started_at < time_bound(until, end=True))
        if sort_metric is not None:
            m = t.metrics.alias("sort_metric")
            q = q.outerjoin(m, sa.and_(m.c.run_id == t.runs.c.id, m.c.split == "test", m.c.metric == sort_metric))
            q = q.order_by(m.c.value.is_(None), m.c.value.asc() if ascending else m.c.value.desc())
        q = q.order_by(t.runs.c.id.desc())
        live_filter = status in ("running", "lost")  # derived: filtered after reading, then limited
        if limit is not None and not live_filter:
            q = q.limit(limit)
        with self._transaction() as conn:
            rows = conn.execute(q).mappings().all()
            if live_filter:
                rows = [r for r in rows if ("lost" if is_lost(r) else "running") == status][:limit]
            test: dict[int, dict[str, float | None]] = {}
            ids = [r["id"] for r in rows]
            if ids:
                mq = sa.select(t.metrics).where(t.metrics.c.run_id.in_(ids), t.metrics.c.split == "test")
                test = nested(conn.execute(mq).mappings(), "run_id")
        return [with_liveness({**decode_run(r), "metrics": test.get(r["id"], {})}) for r in rows]

    def experiments(self) -> list[str]:
        """Names of the experiments with runs in this database, sorted."""
        q = sa.select(t.runs.c.experiment).distinct().order_by(t.runs.c.experiment)
        with self._transaction() as conn:
            return list(conn.execute(q).scalars())

    def group_hashes(self, prefix: str = "") -> list[str]:
        """The distinct ``group_hash`` values starting with ``prefix``, sorted."""
        q = (sa.select(t.runs.c.group_hash).distinct()
             .where(t.runs.c.group_hash.startswith(prefix, autoescape=True)).order_by(t.runs.c.group_hash))
        with self._transaction() as conn:
            return list(conn.execute(q).scalars())

    def plugin_uses(self, kind: str, name: str) -> list[dict]:
        """Every run that used the ``kind`` plugin ``name`` (``"fusions"``, ``"lmf"``), oldest
        first: dicts with run_id, origin, source and version, as ``add_plugins`` recorded them."""
        p = t.run_plugins.c
        q = (sa.select(p.run_id, p.origin, p.source, p.version)
             .where(p.kind == kind, p.name == name).order_by(p.run_id))
        with self._transaction() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def tag_run(self, run_id: int | str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
        """Add and remove tags of a run (one transaction: no concurrent tag is lost); returns its tags."""
        run_id = parse_run_id(run_id)
        add, remove = [str(x) for x in add], {str(x) for x in remove}
        for tag in add:
            if not tag.strip():
                raise ValueError("a tag must not be empty")
        with self._transaction(write=True) as conn:
            raw = self._require(conn, run_id)["tags_json"]
            tags = [x for x in (json.loads(raw) if raw else []) if x not in remove]
            tags += [x for x in dict.fromkeys(add) if x not in tags]
            self._set_run(conn, run_id, {"tags_json": to_json(tags)})
        return tags

    def get_run(self, run_id: int | str) -> dict:
        """One run, every column decoded (``config``, ``versions``, ``tags`` instead of the
        ``_json`` columns), plus ``plugins`` (list), ``epochs`` ``{epoch: {metric: value}}``,
        ``metrics`` ``{split: {metric: value}}``, ``baselines`` ``{baseline: {metric: value}}``,
        ``failures`` (list), ``artifacts`` (list), ``data_notes`` (list) and ``prediction_count``. A
        ``running`` run whose process is gone reads ``lost``. Unknown id: ``RunNotFound``."""
        run_id = parse_run_id(run_id)
        with self._transaction() as conn:
            out = with_liveness(decode_run(self._require(conn, run_id)))

            def rows(table: sa.Table, *order) -> list[dict]:
                q = sa.select(table).where(table.c.run_id == run_id).order_by(*order)
                return [dict(r) for r in conn.execute(q).mappings()]

            out["plugins"] = [{k: r[k] for k in PLUGIN_KEYS} for r in rows(t.run_plugins, t.run_plugins.c.kind)]
            out["epochs"] = nested(rows(t.epochs, t.epochs.c.epoch), "epoch")
            out["metrics"] = nested(rows(t.metrics, t.metrics.c.split), "split")
            out["baselines"] = nested(rows(t.baselines, t.baselines.c.baseline), "baseline")
            out["failures"] = [{k: r[k] for k in FAILURE_KEYS} for r in rows(t.failures, t.failures.c.song_id)]
            out["artifacts"] = [{"kind": r["kind"], "path": r["path"]} for r in rows(t.artifacts)]
            out["data_notes"] = [{k: r[k] for k in DATA_NOTE_KEYS}
                                 for r in rows(t.data_notes, t.data_notes.c.kind, t.data_notes.c.song_id)]
            out["prediction_count"] = conn.execute(
                sa.select(sa.func.count()).select_from(t.predictions).where(t.predictions.c.run_id == run_id)
            ).scalar_one()
        return out

    def get_predictions(self, run_id: int | str, split: str | None = None) -> list[dict]:
        """Per-song predictions of a run (``probs`` decoded), by split then song id."""
        run_id = parse_run_id(run_id)
        q = (sa.select(t.predictions).where(t.predictions.c.run_id == run_id)
             .order_by(t.predictions.c.split, t.predictions.c.song_id))
        if split is not None:
            q = q.where(t.predictions.c.split == split)
        with self._transaction() as conn:
            self._require(conn, run_id)
            out = []
            for r in conn.execute(q).mappings():
                row = {k: v for k, v in r.items() if k not in ("run_id", "probs_json")}
                row["probs"] = json.loads(r["probs_json"]) if r["probs_json"] is not None else None
                out.append(row)
        return out
