"""Feature ids: the one rule for the ``id`` every client sees and for every route that takes one
(``/items/{featureId}``, its history, the edits).

A feature key (``_key``, from the spec's ``source_key``: BSM) is unique in its county only: each
county's delivery numbers its own features, so in a province two counties both hold BSM
``00000007``. A client that identifies features by ``id`` (GDAL's OAPIF driver and QGIS keep it as
the feature's identity, scripts keep ``/items/{id}`` URLs) must never see two features with one id.

The rule:

- a layer whose rows live in one partition only (a county's database: every row in its county, or
  none assigned) keeps the bare key as the id: ``00000007``, the URLs of a county stay as they were;
- a layer whose rows live in more than one partition (a province) qualifies every id with the
  row's county: ``339901-00000007`` (6 digits, ``-``, the key). Unique across the province, and
  stable across versions: a feature keeps its county and its key through every delivery.
  The layer becomes a province layer when a second county's rows arrive, and stays one (partitions
  are never dropped): from then on its ids are qualified in every version read;
- a route given an id resolves it with :func:`resolve`: both readings of the text (the qualified
  one, when it starts with 6 digits and ``-``, and the bare key) are looked up; exactly one
  feature answers it; none is a 404; more than one (a bare key two counties hold, kept from the
  county's database days) is a 409 naming every candidate's qualified id, never one of them picked.

Why ``-``: it is unreserved in URLs (no escaping in a path), and spreadsheets do not read
``339901-00000007`` as a number or a time, as they would ``339901.00000007`` or ``339901:00000007``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from geobase.errors import Conflict, NotFound
from geobase.specs import LayerSpec
from geobase.storage import (COUNTY_PARTITIONS_SQL, DIVISION, ID_SEP, UNASSIGNED, as_of_filter, current_filter,
                             division_filter, partition_ident, table_ident, table_regclass_text)

SEP = ID_SEP
_QUALIFIED = re.compile(rf"^([0-9]{{6}}){re.escape(SEP)}(.+)$", re.S)
#: candidates named in a refusal, at most
LISTED = 20


@dataclass(frozen=True)
class FeatureRef:
    """One feature of a layer: its key and its county (the partition it lives in; None: a key of
    no known county, a feature staged in an edit session so far)."""

    key: str
    division: str | None

    def id(self, qualified: bool) -> str:
        return f"{self.division}{SEP}{self.key}" if qualified else self.key


def id_sql(qualified: bool, alias: str | None = None) -> sql.Composable:
    """The SQL of a row's id under the layer's rule (``alias``: the table's alias, if any)."""
    key = sql.Identifier(alias, "_key") if alias else sql.Identifier("_key")
    if not qualified:
        return key
    div = sql.Identifier(alias, DIVISION) if alias else sql.Identifier(DIVISION)
    return sql.SQL("({} || {} || {})").format(div, sql.Literal(SEP), key)


# -- the layer's rule ---------------------------------------------------------------------------


#: whether the unassigned partition holds rows beside one county's, per database, layer, version
#: and partitions as read together (layer_state): rows arrive there only with a new version, so
#: the answer of one such state never changes; a county's database asks it on every items request
_UNASSIGNED_ROWS: dict[tuple, bool] = {}


def _rule_queries(spec: LayerSpec, divisions: list[str]) -> sql.Composable | None:
    """None when the partitions decide alone; else the query of whether the unassigned rows exist
    beside the one county (rows in two partitions: a province after all)."""
    counties = [d for d in divisions if d != UNASSIGNED]
    if len(counties) != 1 or UNASSIGNED not in divisions:
        return None
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(partition_ident(spec, UNASSIGNED))


def _decided(divisions: list[str]) -> bool:
    return len([d for d in divisions if d != UNASSIGNED]) > 1


async def qualified_ids(conn: psycopg.AsyncConnection, spec: LayerSpec, version: int | None,
                        divisions: Sequence[str] | None = None) -> bool:
    """Whether the layer's ids are county-qualified: its rows live in more than one partition,
    as the connection sees the layer (now; in a caller's own snapshot, the snapshot's, which is
    the state of the rows it reads). ``version``: the caller's version of the layer (None: never
    loaded, bare); ``divisions``: its partitions as the caller read them with its state
    (:func:`geobase.catalog.state.layer_state`), else they are read here.

    Decided on every call from the partitions (read with the caller's state, or here), never
    kept by the version alone: the rule follows the layer's partitions, not the version a
    caller holds. Kept by version, a caller passing the version it read before a second county's
    delivery committed was given the cached bare rule of that version, though the layer was a
    province by then. (Only whether the unassigned partition has rows is kept, for a version and
    partitions read together: :data:`_UNASSIGNED_ROWS`.)"""
    if spec.kind != "vector" or version is None:
        return False
    kept = None
    if divisions is None:
        cur = await conn.execute(COUNTY_PARTITIONS_SQL, (table_regclass_text(spec),))
        divisions = [r[0] for r in await cur.fetchall()]
    else:  # read in one statement with the version: the pair names one state of the layer
        kept = (conn.info.host, conn.info.port, conn.info.dbname, spec.name, version, tuple(divisions))
        if kept in _UNASSIGNED_ROWS:
            return _UNASSIGNED_ROWS[kept]
    divisions = list(divisions)
    q = _rule_queries(spec, divisions)
    if q is None:
        return _decided(divisions)
    answer = bool((await (await conn.execute(q)).fetchone())[0])
    if kept is not None:
        if len(_UNASSIGNED_ROWS) > 1000:
            _UNASSIGNED_ROWS.clear()
        _UNASSIGNED_ROWS[kept] = answer
    return answer


def qualified_ids_sync(conn: psycopg.Connection, spec: LayerSpec) -> bool:
    """:func:`qualified_ids` on a sync connection (the editing service, the CLI)."""
    divisions = [r[0] for r in conn.execute(COUNTY_PARTITIONS_SQL, (table_regclass_text(spec),)).fetchall()]
    q = _rule_queries(spec, divisions)
    return _decided(divisions) if q is None else bool(conn.execute(q).fetchone()[0])


# -- resolving an id a caller gives -------------------------------------------------------------
def readings(feature_id: str) -> list[tuple[str | None, str]]:
    """The (county or None, key) readings of an id: the bare key, and the qualified one when the
    text has that form (a bare key may itself start with 6 digits and ``-``: both are looked up)."""
    out: list[tuple[str | None, str]] = [(None, feature_id)]
    m = _QUALIFIED.match(feature_id)
    if m:
        out.append((m.group(1), m.group(2)))
    return out


def _candidates_sql(spec: LayerSpec, feature_id: str, version: int | None, current: bool,
                    divisions: list[str] | None) -> sql.Composable:
    """The (division, key) of every row the id may name, at most :data:`LISTED` + 1.
    ``current``: the current rows; else ``version``'s, or (None) any version's (a history)."""
    ors = []
    for county, key in readings(feature_id):
        cond = sql.SQL("_key = {}").format(sql.Literal(key))
        if county is not None:  # a literal county: the planner prunes this reading to its partition
            cond = sql.SQL("({} AND {})").format(division_filter(county), cond)
        ors.append(cond)
    when = (current_filter() if current else as_of_filter(version) if version is not None else sql.SQL("TRUE"))
    parts = [when, sql.SQL("({})").format(sql.SQL(" OR ").join(ors))]
    if divisions:
        parts.append(division_filter(divisions))
    return sql.SQL("SELECT DISTINCT {d}, _key FROM {t} WHERE {w} ORDER BY 1, 2 LIMIT {n}").format(
        d=sql.Identifier(DIVISION), t=table_ident(spec), w=sql.SQL(" AND ").join(parts), n=sql.Literal(LISTED + 1))


def _one(spec: LayerSpec, feature_id: str, rows: list[tuple[str, str]]) -> FeatureRef | None:
    """The one feature of the candidates; None for none; 409 naming them all for several."""
    refs = [FeatureRef(k, d) for d, k in rows]
    if len(refs) <= 1:
        return refs[0] if refs else None
    ids = [r.id(True) for r in refs[:LISTED]]
    more = " and more" if len(refs) > LISTED else ""
    raise Conflict(
        f"feature id {feature_id!r} of {spec.name!r} names {len(refs)}{'+' if more else ''} features of different "
        f"counties: {', '.join(ids)}{more}; ask for one by its county-qualified id "
        f"(/collections/{spec.name}/items/{ids[0]}), never one picked for you",
        parameter="featureId", details={"candidates": ids, "divisions": sorted({r.division for r in refs})})


async def resolve(conn: psycopg.AsyncConnection, spec: LayerSpec, feature_id: str, *, version: int | None = None,
                  current: bool = True, divisions: list[str] | None = None) -> FeatureRef | None:
    """The feature ``feature_id`` names (current, or in ``version``, or in any version with
    ``current=False, version=None``), within ``divisions`` when given: None when there is none,
    a 409 naming the candidates' qualified ids when there are several."""
    cur = await conn.execute(_candidates_sql(spec, feature_id, version, current, divisions))
    return _one(spec, feature_id, await cur.fetchall())


def resolve_sync(conn: psycopg.Connection, spec: LayerSpec, feature_id: str, *, version: int | None = None,
                 current: bool = True, divisions: list[str] | None = None) -> FeatureRef | None:
    """:func:`resolve` on a sync connection (the editing service)."""
    rows = conn.execute(_candidates_sql(spec, feature_id, version, current, divisions)).fetchall()
    return _one(spec, feature_id, rows)


def require(ref: FeatureRef | None, spec: LayerSpec, feature_id: str, version: int | None = None) -> FeatureRef:
    """``ref``, or the 404 of an id that names no feature."""
    if ref is None:
        raise NotFound(f"feature {feature_id!r} not found in {spec.name!r}"
                       + (f" (version {version})" if version is not None else ""), parameter="featureId")
    return ref
