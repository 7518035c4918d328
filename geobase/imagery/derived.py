"""Derived layers: what an imagery job computes per parcel, stored as a new version of a layer
declared in ``layers/`` (``parcel_imagery``, ``parcel_flags``) through the one version writer
(:func:`geobase.catalog.versions.write_version`), so a derived layer is in the catalog,
``/collections``, tiles, time travel and diffs like any delivered layer.

Why this way: the job's numbers are joined to the parcels' current rows (geometry, county,
area) in SQL and handed to the writer as a table, in one transaction under the layer's lock; a
kill before COMMIT leaves the previous version served and no half version
(``tests/test_imagery_flags.py`` kills a job's process mid-write).

Rules of ownership: a derived layer is written only by its job. Its current version must have
been written by that job (``metadata.derived.job``), else the job refuses (a steward's load or
a rollback is kept, as the demo keeps them). Each version's metadata records its inputs (the
parcel layer and version, the collection, expressions and the scenes with their dates); a run
whose inputs equal the current version's inputs writes nothing and answers that version."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from geobase.catalog.deliveries import current_origin_row
from geobase.catalog.versions import write_version
from geobase.errors import Conflict
from geobase.settings import Settings
from geobase.specs import LayerSpec
from geobase.storage import DIVISION, current_filter, measure_column, table_ident

PG_COPY_TYPES = {"text": "text", "integer": "bigint", "number": "double precision", "datetime": "timestamptz",
                 "date": "date", "boolean": "boolean"}


@dataclass
class Derived:
    """One job's output: ``rows`` (dicts keyed by the spec's attribute names, ``parcel`` naming the
    source parcel's key and ``division`` its county: a key is unique in its county only, so in a
    province the key alone names a parcel of every county that holds it), the ``inputs`` recorded in the version, and ``keep`` a condition on the
    derived layer's current rows that this run does not recompute and carries forward as they
    are (e.g. the other indices of ``parcel_imagery``)."""

    job: str
    spec: LayerSpec
    source: LayerSpec
    rows: list[dict]
    inputs: dict
    key: list[str]
    keep: sql.Composable | None = None
    report: dict = field(default_factory=dict)


def inputs_checksum(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _check_origin(conn: psycopg.Connection, d: Derived) -> dict | None:
    """The current version's row, after checking it is this job's (Conflict otherwise)."""
    row = current_origin_row(conn, d.spec.name)
    if row is None:
        return None
    made_by = ((row["metadata"] or {}).get("derived") or {}).get("job")
    if made_by != d.job:
        raise Conflict(f"layer {d.spec.name!r}: its current version v{row['version']} was not written by the "
                       f"{d.job} job (source {row['source_name']!r}, by {row['created_by']}): kept, nothing written")
    return row


def _values_table(conn: psycopg.Connection, d: Derived) -> None:
    """``_derived_values``: the job's numbers and each one's parcel county (``_division``),
    COPYed (one round trip for a million parcels)."""
    attrs = d.spec.attributes
    if any(not r.get(DIVISION) for r in d.rows):  # a row without it would join no parcel, or the wrong one
        raise ValueError(f"{d.job}: every derived row names its parcel's county ({DIVISION!r})")
    conn.execute("DROP TABLE IF EXISTS _derived_values")
    cols = [sql.SQL("{} {}").format(sql.Identifier(a.name), sql.SQL(PG_COPY_TYPES[a.type])) for a in attrs]
    conn.execute(sql.SQL("CREATE TEMP TABLE _derived_values ({}, _division text NOT NULL)").format(
        sql.SQL(", ").join(cols)))
    names = [a.name for a in attrs]
    with conn.cursor().copy(sql.SQL("COPY _derived_values ({}, _division) FROM STDIN").format(
            sql.SQL(", ").join(sql.Identifier(n) for n in names))) as cp:
        for r in d.rows:
            cp.write_row([r.get(n) for n in names] + [r[DIVISION]])


def _rows_table(conn: psycopg.Connection, d: Derived) -> sql.Composable:
    """``_derived_rows``: the layer table's columns, the numbers joined to the parcels' current
    rows (geometry, county, area) by key AND county, plus the current rows the run carries forward.
    The row hash is of the attributes only (as before the county column), so a re-run over the
    same numbers changes no row."""
    measure = measure_column(d.spec)
    attrs = d.spec.attribute_names
    geo = ["division", *([measure] if measure else []), "geom", "geom_3857"]
    key = sql.SQL(" || '.' || ").join(sql.Identifier("v", k) for k in d.key)
    conn.execute("DROP TABLE IF EXISTS _derived_rows")
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE _derived_rows AS SELECT ({key}) COLLATE \"C\" AS _key, "
        "md5(row_to_json((SELECT x FROM (SELECT {attrs}) x))::text || s._hash) AS _hash, "
        "{attrs}, {geo} FROM _derived_values v JOIN {src} s ON s._key = v.parcel AND s.{div} = v._division AND {cur}"
    ).format(div=sql.Identifier(DIVISION),
            key=key, attrs=sql.SQL(", ").join(sql.Identifier("v", a) for a in attrs),
            geo=sql.SQL(", ").join(sql.Identifier("s", c) for c in geo), src=table_ident(d.source),
            cur=current_filter("s")))
    if d.keep is not None:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in ["_key", "_hash", *attrs, *geo])
        conn.execute(sql.SQL("INSERT INTO _derived_rows ({c}) SELECT {c} FROM {t} WHERE {cur} AND {keep}").format(
            c=cols, t=table_ident(d.spec), cur=current_filter(), keep=d.keep))
    # as the ingest's staging table: keys byte-ordered like the layer's, an index on them, statistics
    # (temp tables get no autovacuum), else the writer's key joins run as nested loops
    conn.execute("CREATE INDEX ON _derived_rows (_key)")
    conn.execute("ANALYZE _derived_rows")
    return sql.Identifier("_derived_rows")


def write_derived(settings: Settings, d: Derived, *, user: str) -> dict:
    """Write ``d`` as a new version of its layer (or nothing when its inputs are the current
    version's); returns ``{layer, version, written, rows_total, added, removed, changed}``."""
    from geobase.db import database_url

    checksum = inputs_checksum(d.inputs)
    with psycopg.connect(database_url(settings)) as conn:
        current = _check_origin(conn, d)
        if current is not None and current["source_checksum"] == checksum:
            return {"layer": d.spec.name, "version": current["version"], "written": False,
                    "reason": "the current version was made from the same inputs"}
        _values_table(conn, d)
        rows = _rows_table(conn, d)
        metadata = {"derived": {"job": d.job, "inputs": d.inputs}}
        res = write_version(conn, d.spec, rows, mode="replace", version_row={
            "source_name": f"{d.job}:{d.inputs.get('collection', '')}", "source_checksum": checksum,
            "source_format": "derived", "created_by": user,
            "report": {"errors": {}, "warnings": {}, **d.report}, "metadata": metadata})
    return {"layer": d.spec.name, "version": res.version, "written": True, "rows_total": res.rows_total,
            "added": res.added, "removed": res.removed, "changed": res.changed}
