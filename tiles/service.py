"""Vector tiles for a caller: access, versions, cache, rendering — the part routers and the
seeding CLI share.

Per request: one small query reads every layer's access facts and current version (so an
ingest is visible on the very next request, no restart, no notification needed); then the
cache is looked up under the key built from those versions; on a miss one statement renders
the tile and returns the versions it read, under which the tile is stored. A tile that is
probably not cached is rendered in the same round trip as the states query
(:class:`StatesHint`, :func:`tile_for`). Before FastAPI (:mod:`geobase.api.tile_fast`), a
cached tile is answered by :func:`cached_tile` from states shared by the requests in flight
(:mod:`geobase.tiles.fresh`) and the caller's :class:`TileView` of them, and a miss by
:func:`tile_for` itself (:mod:`geobase.api.tile_cold`), as the routers answer it."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import psycopg
from geobase.tiles.cache import TileCache, cache_key, etag_for
from geobase.tiles.mvt import plan_layer
from geobase.tiles.plans import layer_plans
from geobase.tiles.prune import render_pruned
from geobase.tiles.render import gzip_tile, render
from geobase.tiles.tms import TileMatrixSet

from geobase.catalog import layer_versions
from geobase.catalog.state import LayerState, layer_state, layer_states
from geobase.errors import InvalidInput, NotFound
from geobase.features.params import resolve_datetime
from geobase.security import Principal, can_see, caller_view, note_denied, note_read, view_signature
from geobase.settings import Settings
from geobase.specs import LayerSpec, Registry

ONEMAP = "onemap"


@dataclass
class TileResult:
    #: gzip-compressed for MVT (may be b"" for an empty tile); None: a tile rendered just now for
    #: a caller that answers with ``raw`` and compresses it after answering, if at all
    #: (:func:`tile_for`'s ``after``)
    body: bytes | None
    etag: str
    cached: bool
    #: :func:`version_tag` of the layer versions and view the content came from: a tile URL
    #: carrying this tag as ``?v=`` may be cached for good (see api/tiles.py)
    tag: str | None = None
    not_modified: bool = False  # ``if_none_match`` matched: answer 304 (body is empty)
    #: the uncompressed MVT of a tile rendered just now: a client without gzip gets it as it
    #: is, without decompressing ``body`` again (None for a cached tile)
    raw: bytes | None = None


def version_tag(versions: dict[str, int | None], view_signature: str) -> str:
    """The version part of tile URLs (``?v=``): changes exactly when the tiles of these layers
    can change for this caller (a layer's new version, a sharing change that alters the view).
    TileJSON and the style put it into their tile URLs; a tile answered for the same tag is the
    same bytes forever, so browsers may keep it (``immutable``)."""
    raw = ",".join(f"{n}@{versions[n]}" for n in sorted(versions)) + "|" + view_signature
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def layers_tag(principal: Principal, states: dict[str, LayerState], registry: Registry,
               specs: list[LayerSpec]) -> str:
    """:func:`version_tag` of the current versions of ``specs`` (what TileJSON and the style use)."""
    return version_tag({s.name: states[s.name].current_version for s in specs}, signature(principal, states, registry))


def raster_tag(layer: str, version: int | None) -> str:
    """:func:`version_tag` of a raster layer (DEM tiles do not depend on the caller)."""
    return version_tag({layer: version}, "raster")


def tile_format(fmt: str, divisions: tuple[str, ...] | None) -> str:
    """The format part of a tile's cache key: a ``division=`` tile is its own entry (only those
    counties drawn), never the plain tile's."""
    return fmt if divisions is None else f"{fmt};division={','.join(divisions)}"


#: For tests only: awaited between planning a tile (which fixes the pyramid version it reads)
#: and rendering it, to force an ingest to commit in between (a race that is otherwise rare).
render_hook: Callable[[], Awaitable[None]] | None = None


def resolve_layers(layers: str, states: dict[str, LayerState], principal: Principal,
                   registry: Registry, *, note: bool = True) -> list[LayerSpec]:
    """The vector layers named by a ``{layers}`` path segment: a comma list or ``onemap``.

    Hidden and unknown layers are both 404 (never 403) so their existence does not leak;
    ``onemap`` is every vector layer the caller may see. ``note`` records the reads in the
    request's audit context (not for a guess that may still be discarded)."""
    def visible(name: str) -> bool:
        st = states.get(name)
        return st is not None and name in registry.layers and can_see(principal, st.access)

    if layers == ONEMAP:
        out = [registry.layers[n] for n in sorted(states) if visible(n) and registry.layers[n].kind == "vector"]
        if note:
            note_reads(principal, states, out)
        return out
    names = [n.strip() for n in layers.split(",") if n.strip()]
    if not names:
        raise InvalidInput("layers: give a comma-separated list of layer names or 'onemap'", parameter="layers")
    if len(set(names)) != len(names):
        raise InvalidInput("layers: a layer is named twice", parameter="layers")
    out = []
    for n in names:
        if not visible(n):
            if note and n in states and n in registry.layers:
                note_denied(n)  # a real layer hidden from this caller: audited as read.denied
            raise NotFound(f"layer {n!r} not found", parameter="layers")
        spec = registry.layers[n]
        if spec.kind != "vector":
            raise InvalidInput(f"layer {n!r} is a raster; use /tiles/{n}/{{style}}/{{z}}/{{x}}/{{y}}.png",
                               parameter="layers")
        out.append(spec)
        if note:
            note_read(principal, states[n].access, spec)
    return out


def signature(principal: Principal, states: dict[str, LayerState], registry: Registry) -> str:
    return view_signature(principal, [s.access for s in states.values()], registry)


async def vector_tile(conn: psycopg.AsyncConnection, cache: TileCache | None, registry: Registry,
                      principal: Principal, states: dict[str, LayerState], specs: list[LayerSpec],
                      tms: TileMatrixSet, z: int, row: int, col: int,
                      if_none_match: str | None = None, timeout_ms: int | None = None,
                      pyramid_url: str | None = None, divisions: tuple[str, ...] | None = None, *,
                      after: list[Callable[[], None]] | None = None, gzip: bool = True) -> TileResult:
    """The gzip-compressed MVT (``not_modified`` when ``if_none_match`` matches: answer 304);
    ``divisions``: only those counties' rows (checked counties, ``division=``); ``after`` and
    ``gzip``: see :func:`tile_for`."""
    tms.validate(z, row, col)
    sig = signature(principal, states, registry)
    names = [s.name for s in specs]
    versions = {n: states[n].current_version for n in names}
    fmt = tile_format("mvt", divisions)
    key = cache_key(versions, tms.id, z, row, col, fmt, sig)
    etag = etag_for(key)
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return TileResult(b"", etag, True, version_tag(versions, sig), not_modified=True)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return TileResult(hit, etag, True, version_tag(versions, sig))
    plans = await layer_plans(conn, registry, principal, states, specs, tms, z, pyramid_url, divisions)
    if render_hook is not None:
        await render_hook()
    raw = None
    if plans:
        body, versions, _, raw = await render_pruned(conn, plans, names, states, tms, z, row, col, timeout_ms,
                                                     compress=gzip or after is None)
    else:
        body = b""
    key = cache_key(versions, tms.id, z, row, col, fmt, sig)
    _keep(cache, key, body, raw, after)
    return TileResult(body, etag_for(key), False, version_tag(versions, sig), raw=raw)


def _keep(cache: TileCache | None, key: str, body: bytes | None, raw: bytes | None,
          after: list[Callable[[], None]] | None) -> None:
    """Store a tile rendered just now under ``key`` (the versions its rows were read under): at
    once, or, given ``after``, by a step appended to it that the caller runs once its answer
    is sent (compressing the tile first when ``body`` is None). The key and the bytes are
    fixed before the answer leaves; only the file write (and the compression a client without
    gzip did not need) waits, and a cache that is off (size 0) is not even compressed for."""
    if cache is None:
        return
    if after is None:
        cache.put(key, body)
        return
    if not cache.enabled:
        return

    def keep() -> None:
        cache.put(key, body if body is not None else (gzip_tile(raw) if raw else b""))

    after.append(keep)


class StatesHint:
    """The layer states this process read last (one per server process).

    A guess, never trusted on its own: it lets a tile that is probably not cached be rendered
    in the same round trip that reads the current states, instead of one round trip for the
    states and another for the tile. When the states read with the tile differ from the guess
    in anything (a new version, a sharing change), the tile is discarded and the request
    follows the ordinary path with the fresh states, so no tile is ever built or cached from
    stale access or version facts."""

    def __init__(self) -> None:
        self.states: dict[str, LayerState] | None = None


async def tile_for(conn: psycopg.AsyncConnection, cache: TileCache | None, registry: Registry,
                   principal: Principal, layers: str, tms: TileMatrixSet, z: int, row: int, col: int, *,
                   hint: StatesHint | None = None, if_none_match: str | None = None,
                   timeout_ms: int | None = None, pyramid_url: str | None = None,
                   divisions: tuple[str, ...] | None = None, after: list[Callable[[], None]] | None = None,
                   gzip: bool = True) -> TileResult:
    """Resolve ``layers`` for the caller and answer the tile (``not_modified``: 304), see
    :class:`StatesHint`; ``divisions``: only those counties' rows (:func:`vector_tile`).

    ``after``: the caller runs each step appended to this list once its answer is sent (the
    tile fast path, api/tile_fast.py): a tile rendered now is stored in the cache there, not
    before the answer; with ``gzip`` False (a client without gzip, answered with ``raw``) such
    a tile is compressed only there, and only when the cache keeps it (``body`` is None)."""
    tms.validate(z, row, col)
    fmt = tile_format("mvt", divisions)
    guess = hint.states if hint is not None else None
    fresh: dict[str, LayerState] | None = None
    if guess is not None:
        try:
            specs = resolve_layers(layers, guess, principal, registry, note=False)
        except (NotFound, InvalidInput):
            specs = None  # decided on fresh states below, never on a guess
        if specs:
            names = [s.name for s in specs]
            sig = signature(principal, guess, registry)
            key = cache_key({n: guess[n].current_version for n in names}, tms.id, z, row, col, fmt, sig)
            etag = etag_for(key)
            revalidating = bool(if_none_match and etag in [t.strip() for t in if_none_match.split(",")])
            cached = None if revalidating or cache is None else cache.get(key)
            if revalidating or cached is not None:
                # probably a 304 or a hit: one round trip confirms the guess is still the truth
                fresh = await layer_states(conn)
                hint.states = fresh
                if fresh == guess:
                    note_reads(principal, fresh, specs)
                    tag = version_tag({n: guess[n].current_version for n in names}, sig)
                    return (TileResult(b"", etag, True, tag, not_modified=True) if revalidating
                            else TileResult(cached, etag, True, tag))
            else:
                plans = await layer_plans(conn, registry, principal, guess, specs, tms, z, pyramid_url, divisions)
                if plans:
                    body, versions, fresh, raw = await render_pruned(conn, plans, names, guess, tms, z, row, col,
                                                                      timeout_ms, with_states=True,
                                                                      compress=gzip or after is None)
                    hint.states = fresh
                    if fresh == guess:
                        note_reads(principal, fresh, specs)  # fresh == guess: the same view signature
                        key = cache_key(versions, tms.id, z, row, col, fmt, sig)
                        _keep(cache, key, body, raw, after)
                        return TileResult(body, etag_for(key), False, version_tag(versions, sig), raw=raw)
    if fresh is None:
        fresh = await layer_states(conn)
        if hint is not None:
            hint.states = fresh
    specs = resolve_layers(layers, fresh, principal, registry)
    return await vector_tile(conn, cache, registry, principal, fresh, specs, tms, z, row, col,
                             if_none_match=if_none_match, timeout_ms=timeout_ms, pyramid_url=pyramid_url,
                             divisions=divisions, after=after, gzip=gzip)


@dataclass(frozen=True)
class TileView:
    """Today's tile of a ``{layers}`` segment for one caller and one set of layer states: the
    layers drawn (each one the caller may see), the view signature, the versions and their tag.
    A pure function of (states, caller, segment): :mod:`geobase.api.tile_fast` keeps it while the
    states it read are unchanged, instead of resolving the segment again for every tile."""

    specs: tuple[LayerSpec, ...]
    sig: str
    versions: dict[str, int | None]
    tag: str


def tile_view(registry: Registry, principal: Principal, states: dict[str, LayerState], layers: str) -> TileView | None:
    """The :class:`TileView`, or None when the segment is not answerable from the cache for this
    caller (unknown or hidden layers, a raster, bad syntax, nothing to draw): the ordinary path
    (:func:`tile_for`) then refuses and audits."""
    try:
        specs = resolve_layers(layers, states, principal, registry, note=False)
    except (NotFound, InvalidInput):
        return None
    if not specs:
        return None
    sig = signature(principal, states, registry)
    versions = {s.name: states[s.name].current_version for s in specs}
    return TileView(tuple(specs), sig, versions, version_tag(versions, sig))


def cached_tile(cache: TileCache | None, principal: Principal, states: dict[str, LayerState], view: TileView,
                tms: TileMatrixSet, z: int, row: int, col: int, if_none_match: str | None = None, *,
                note: bool = True) -> TileResult | None:
    """Today's tile if it is certainly a cache hit or a 304, given fresh ``states`` (read after
    the request arrived) and their ``view`` (:func:`tile_view`) for this caller; None otherwise
    (a miss, a tile outside the matrix), and the caller takes the ordinary path. The layers read
    are noted for the audit exactly as :func:`tile_for` notes them (not with ``note=False``: a
    probe with states that are only a guess, whose answer is never sent)."""
    try:
        tms.validate(z, row, col)
    except InvalidInput:
        return None
    key = cache_key(view.versions, tms.id, z, row, col, "mvt", view.sig)
    etag = etag_for(key)
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        if note:
            note_reads(principal, states, view.specs)
        return TileResult(b"", etag, True, view.tag, not_modified=True)
    body = cache.get(key) if cache is not None else None
    if body is None:
        return None
    if note:
        note_reads(principal, states, view.specs)
    return TileResult(body, etag, True, view.tag)


async def tile_at_version(conn: psycopg.AsyncConnection, cache: TileCache | None, registry: Registry,
                          principal: Principal, layers: str, tms: TileMatrixSet, z: int, row: int, col: int,
                          version: int | None, *, at: str | None = None, if_none_match: str | None = None,
                          timeout_ms: int | None = None, pyramid_url: str | None = None,
                          divisions: tuple[str, ...] | None = None) -> TileResult:
    """One layer's tile as it was in ``version``, or at the instant ``at`` (``datetime``: the
    version current then, as the features API picks it) — the map's time slider and swipe.

    The current version is the ordinary tile (same bytes, same cache entry). An earlier one is
    drawn from the rows current in it (:func:`geobase.storage.as_of_filter`) and cached under
    that version: its rows never change again, so the key needs no current version. A version
    the layer never had is refused (400 naming ``version``), never answered with today's map."""
    tms.validate(z, row, col)
    states = await layer_states(conn)
    specs = resolve_layers(layers, states, principal, registry)
    param = "version" if at is None else "datetime"
    if len(specs) != 1:
        raise InvalidInput(f"{param}: name one layer (a version belongs to one layer), not a list or onemap",
                           parameter=param)
    spec = specs[0]
    sig = signature(principal, states, registry)
    fmt = tile_format("mvt:as-of", divisions)
    if at is not None:
        if version is not None:
            raise InvalidInput("datetime: give version or datetime, not both", parameter="datetime")
        version = resolve_datetime(await layer_state(conn, spec), at)
        if version is None:  # the layer had no version yet then: an empty map, never today's
            return TileResult(b"", etag_for(cache_key({spec.name: 0}, tms.id, z, row, col, fmt, sig)), True)
    if version == states[spec.name].current_version:
        return await vector_tile(conn, cache, registry, principal, states, specs, tms, z, row, col,
                                 if_none_match=if_none_match, timeout_ms=timeout_ms, pyramid_url=pyramid_url,
                                 divisions=divisions)
    if version not in await layer_versions(conn, spec.name):
        raise InvalidInput(f"version: layer {spec.name!r} never had version {version}", parameter="version")
    key = cache_key({spec.name: version}, tms.id, z, row, col, fmt, sig)
    etag, tag = etag_for(key), version_tag({spec.name: version}, sig)
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return TileResult(b"", etag, True, tag, not_modified=True)
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        return TileResult(hit, etag, True, tag)
    plan = plan_layer(spec, registry, z, *caller_view(principal, spec))
    body, raw = b"", None
    if plan is not None:
        body, _, _, raw = await render(conn, [replace(plan, as_of=version, counties=divisions)], [spec.name], tms,
                                        z, row, col, timeout_ms)
    if cache is not None:
        cache.put(key, body)
    return TileResult(body, etag, False, tag, raw=raw)


def note_reads(principal: Principal, states: dict[str, LayerState], specs) -> None:
    for spec in specs:  # audit: reads of non-public layers (security.note_read decides)
        note_read(principal, states[spec.name].access, spec)


def cache_for(settings: Settings) -> TileCache:
    return TileCache(settings.data_path / "tiles", settings.tile_cache_max_bytes)
