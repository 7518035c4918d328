"""Who may see what — enforced here, and only here.

Every router, the tile cache and the analyses ask this module which layers a caller may see
and which attributes are masked for them. A hidden layer is reported as *not found* (404), so
callers cannot learn that it exists.

Sharing levels (per layer, from its spec, changeable by an admin):
  public      everyone, including callers without a key
  internal    every department's keys
  restricted  the owner department and the departments named in ``shared_with``
  private     the owner department only
Admins see everything — inside the network zone's limits.

Grades, openness and zones (:mod:`geobase.opendata.grades`): the deployment runs in one network
zone (``GEOBASE_NETWORK_ZONE``); a layer whose grade x openness that zone does not allow is
invisible to everyone, admins included (:func:`can_see` asks it before anything else, so the
catalog, items, tiles, downloads and analyses all obey it). In the internet zone a conditional
layer's data reach keyed callers only. A key of an approved request (``Principal.scope``) sees
only the datasets it was granted, inside the box it was granted (:func:`scope_box`) and in its
formats (:func:`require_format`: files, pages and tiles alike). Outside callers (no key, or a
request's key) get the layer as its openness class's ``desensitise`` rules say
(:func:`desensitisation`: dropped and masked attributes, rounded or township-generalised
geometry; the rules and their SQL in
:mod:`geobase.opendata.desensitise`); masked attributes are among :func:`hidden_attributes`, so
no filter, sort or analysis can name them.

Keys are resolved by :mod:`geobase.keys` (installed as ``app.state.principal_resolver`` by
the app factory, ``geobase.api.app``; without it the routes' dependency
:func:`geobase.api.gate.get_principal` refuses, never answering as for the public); every
layer these checks let through is noted in the request's audit context (:mod:`geobase.audit`), so routers get audit rows without extra code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import psycopg

from geobase import audit
from geobase.catalog.imagery import IMAGERY_RULE_LAYER  # imagery follows that layer's sharing rule
from geobase.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from geobase.opendata.desensitise import Desensitisation
from geobase.opendata.desensitise import plan as desensitise_plan
from geobase.opendata.grades import ZONES, open_to_anonymous, zone_allows
from geobase.principal import PUBLIC, Principal
from geobase.specs import LayerSpec, Registry
from geobase.vocab import Role

__all__ = [
    "PUBLIC",
    "LayerAccess",
    "Principal",
    "Role",
    "caller_view",
    "can_see",
    "catalog_lists",
    "desensitisation",
    "format_read",
    "geometry_exact",
    "hidden_attributes",
    "layer_accesses",
    "network_zone",
    "note_denied",
    "note_read",
    "reads_format",
    "record_visible",
    "require_editor",
    "require_field",
    "require_fields",
    "require_format",
    "require_layer",
    "require_role",
    "scope_box",
    "set_network_zone",
    "view_signature",
    "visible_attributes",
    "visible_layers",
]


@dataclass(frozen=True)
class LayerAccess:
    """A layer's access facts as stored in the catalog (the admin may have changed them)."""

    name: str
    department: str
    sharing: str
    shared_with: tuple[str, ...] = field(default_factory=tuple)
    #: the effective data grade and openness class (an admin's override, else the spec's); None
    #: (a caller that did not read them) is refused like any unknown value: fail closed
    grade: str | None = None
    openness: str | None = None


_ZONE: list[str] = []


def set_network_zone(zone: str) -> None:
    """The app factory installs its settings' zone here (the CLI uses the process settings')."""
    if zone not in ZONES:
        raise ValueError(f"not a network zone: {zone!r}")
    _ZONE[:] = [zone]


def network_zone() -> str:
    """The zone this process serves (``GEOBASE_NETWORK_ZONE``)."""
    if _ZONE:
        return _ZONE[0]
    from geobase.settings import get_settings

    return get_settings().network_zone


def catalog_lists(access: LayerAccess) -> bool:
    """May the dataset's catalog record be listed here at all (its grade x openness allowed in
    this zone)? A conditional dataset is listed to everyone so it can be requested."""
    return zone_allows(network_zone(), access.grade, access.openness)


def record_visible(principal: Principal, access: LayerAccess) -> bool:
    """May this caller find the dataset's catalog record? Where the zone allows the dataset: when
    the caller may read its data, or when it is conditional (有条件开放: listed so it can be
    requested, its data reach only the keys of approved requests)."""
    return catalog_lists(access) and (can_see(principal, access) or access.openness == "conditional")


def can_see(principal: Principal, access: LayerAccess) -> bool:
    """May this caller read the layer's data? The zone first (for everyone), then an approved
    request's scope, then the sharing level."""
    zone = network_zone()
    if not zone_allows(zone, access.grade, access.openness):
        return False
    if principal.scope is not None:
        return access.name in principal.scope
    if principal.is_public and not open_to_anonymous(zone, access.openness):
        return False
    if principal.is_admin or access.sharing == "public":
        return True
    if principal.is_public:
        return False
    if access.sharing == "internal":
        return True
    if principal.department == access.department:
        return True
    return access.sharing == "restricted" and principal.department in access.shared_with


def hidden_attributes(principal: Principal, spec: LayerSpec) -> set[str]:
    """Attributes masked for this caller (e.g. right-holder names hidden from the public)."""
    if principal.is_admin or (principal.department and principal.department == spec.department
                               and principal.scope is None):
        return set()
    audience = "public" if principal.is_public else "internal"
    hidden = {a.name for a in spec.attributes if audience in a.hidden_from}
    d = desensitisation(principal, spec)
    if d is not None:  # dropped and masked attributes: never readable (nor filterable) in the clear
        hidden |= d.hidden
    return hidden


def desensitisation(principal: Principal, spec: LayerSpec) -> Desensitisation | None:
    """The openness class's desensitisation of ``spec`` for this caller: outside callers (no
    key, or an approved request's key) get the rules of the layer's class
    (:mod:`geobase.opendata.desensitise`), everyone else None (the data as stored). Every output
    that shows masked values or a generalised geometry reads them from what this returns."""
    if not principal.is_outside or principal.is_admin:
        return None
    return desensitise_plan(spec.name, spec.geometry, spec.desensitise.get(spec.openness, []))


def caller_view(principal: Principal, spec: LayerSpec) -> tuple[set[str], Desensitisation | None, tuple | None]:
    """(:func:`hidden_attributes`, :func:`desensitisation`, :func:`scope_box`) of the caller:
    what a vector tile needs."""
    return hidden_attributes(principal, spec), desensitisation(principal, spec), principal.bbox


def geometry_exact(principal: Principal, spec: LayerSpec) -> bool:
    """Does this caller read the layer's geometry as stored (no round/township rule) and
    everywhere (a key without a box)? Analyses and searches use only such layers: their results
    would give a generalised geometry back, or reach outside the box."""
    d = desensitisation(principal, spec)
    return (d is None or d.exact_geometry) and principal.bbox is None


def visible_attributes(principal: Principal, spec: LayerSpec) -> list[str]:
    hidden = hidden_attributes(principal, spec)
    return [a for a in spec.attribute_names if a not in hidden]


def require_field(spec: LayerSpec, name: object, parameter: str, *, hidden: set[str],
                  extra: tuple[str, ...] | list[str] = (), where: str | None = None) -> str:
    """The one check of every input that names a field (items' properties/sortby, an analysis'
    class field or group-by, a filter or rule attribute): ``name`` if it is an attribute of
    ``spec`` (or one of ``extra``, e.g. the stored area) that this caller may read, otherwise
    InvalidInput naming the field and the parameter. A masked attribute is refused exactly like
    an unknown one, so no analysis can group, sort or filter by what items would hide.
    ``hidden`` is :func:`hidden_attributes` of the caller (callers hold it already)."""
    if isinstance(name, str) and name not in hidden and (name in spec.attribute_names or name in extra):
        return name
    readable = [a for a in spec.attribute_names if a not in hidden] + [e for e in extra if e not in hidden]
    shown = str(name)[:100] if isinstance(name, str) else type(name).__name__
    raise InvalidInput(f"{where or parameter}: layer {spec.name!r} has no attribute {shown!r} readable by this "
                       f"caller (readable: {', '.join(readable)})", parameter=parameter)


def require_fields(principal: Principal, spec: LayerSpec, names, parameter: str, **kw) -> list[str]:
    """:func:`require_field` for each name, with the caller's masked attributes of ``spec``."""
    hidden = hidden_attributes(principal, spec)
    return [require_field(spec, n, parameter, hidden=hidden, **kw) for n in names]


def view_signature(principal: Principal, accesses: list[LayerAccess], registry: Registry) -> str:
    """A short key for what this caller can see: equal for callers with equal views, so caches
    (tiles) may be shared between them and never between callers who see different things."""
    # memoised per registry (computed on every tile request from a handful of values that rarely
    # change); the memo holds its registry, so the id in the key cannot be reused by another
    kept, memo = _SIGNATURES.setdefault(id(registry), (registry, {}))
    # what can_see and hidden_attributes read of the principal: its role flags and department
    key = (principal.is_admin, principal.is_public, principal.department, principal.scope, network_zone(),
           tuple(sorted(accesses, key=lambda x: x.name)), principal.bbox)
    sig = memo.get(key)
    if sig is None:
        if len(memo) > 4096:
            memo.clear()
        sig = memo[key] = _view_signature(_Viewer(*key[:4], bbox=key[6]), key[5], kept)
    return sig


_SIGNATURES: dict[int, tuple[Registry, dict]] = {}


def _view_signature(principal: _Viewer, accesses: tuple[LayerAccess, ...], registry: Registry) -> str:
    parts = []
    for a in accesses:
        if can_see(principal, a) and a.name in registry.layers:
            spec = registry.layers[a.name]
            d = desensitisation(principal, spec)  # masks are among the hidden; a geometry rule is not
            rule = d.geometry.model_dump_json() if d is not None and d.geometry is not None else ""
            parts.append(a.name + ":" + ",".join(sorted(hidden_attributes(principal, spec))) + rule)
    parts.append(repr(principal.bbox))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Viewer:
    """The part of a Principal that decides what it sees (see view_signature)."""

    is_admin: bool
    is_public: bool
    department: str | None
    scope: frozenset[str] | None
    bbox: tuple[float, float, float, float] | None = None

    @property
    def is_outside(self) -> bool:
        return self.is_public or self.scope is not None


async def layer_accesses(conn: psycopg.AsyncConnection) -> list[LayerAccess]:
    from geobase.catalog import access_rows

    return [LayerAccess(*r) for r in await access_rows(conn)]


def note_read(principal: Principal, access: LayerAccess, spec: LayerSpec) -> None:
    """For code that decides visibility with :func:`can_see` itself (e.g. composite tiles):
    record the layer read in the request's audit context, like ``require_layer`` does."""
    _note_read(principal, access, spec)


def note_denied(name: str) -> None:
    """A read refused because the caller may not see layer ``name`` (answered 404, as if it did
    not exist): always audited, as ``read.denied`` with the layer, whoever the caller is."""
    audit.note(action="read.denied", force=True, layer=name)


def _note_read(principal: Principal, access: LayerAccess, spec: LayerSpec) -> None:
    """Tell the request's audit context that this layer is read and whether that is non-public
    data (a non-public layer, or attributes masked from the public that this caller sees)."""
    sensitive = access.sharing != "public" or (
        not principal.is_public and any("public" in a.hidden_from for a in spec.attributes))
    audit.note_layer(access.name, sensitive=sensitive)


def boxed_out(principal: Principal, spec: LayerSpec) -> bool:
    """A key granted a box reads features clipped to it; a raster (the DEM, and imagery, which
    follows the DEM's rule) is not clipped, so such a key does not see it at all (fail closed)
    rather than read its pixels outside the box."""
    return principal.bbox is not None and spec.kind != "vector"


async def visible_layers(conn: psycopg.AsyncConnection, principal: Principal, registry: Registry, *,
                         exact_geometry: bool = False) -> list[LayerSpec]:
    """Specs of the layers this caller may see, in name order. ``exact_geometry``: only those
    whose geometry the caller reads as stored (the inputs of analyses and searches; see
    :func:`geometry_exact`)."""
    out = []
    for a in await layer_accesses(conn):
        spec = registry.layers.get(a.name)
        if spec is not None and can_see(principal, a) and not boxed_out(principal, spec) and (
                not exact_geometry or geometry_exact(principal, spec)):
            _note_read(principal, a, registry.layers[a.name])
            out.append(registry.layers[a.name])
    return out


async def require_layer(conn: psycopg.AsyncConnection, principal: Principal, registry: Registry,
                        name: str) -> LayerSpec:
    """The layer's spec if the caller may see it; otherwise NotFound (never Forbidden)."""
    if not isinstance(name, str) or name not in registry.layers:  # also keeps junk (NUL, huge) off the DB
        raise NotFound(f"collection {str(name)[:100]!r} not found", parameter="collectionId")
    from geobase.catalog import access_rows

    rows = await access_rows(conn, name)
    access = LayerAccess(*rows[0]) if rows else None
    if access is None or name not in registry.layers or not can_see(principal, access) \
            or boxed_out(principal, registry.layers[name]):
        if access is not None:
            note_denied(name)
        raise NotFound(f"collection {name!r} not found", parameter="collectionId")
    _note_read(principal, access, registry.layers[name])
    return registry.layers[name]


#: what each kind of read is called among the formats a request's key may be granted
#: (:data:`geobase.catalog.requests.FORMATS`): the API's paged JSON and its HTML views (a
#: ``download=true`` of them is the GeoJSON file), vector tiles, picture tiles (PNG or WebP:
#: imagery tiles too), raw raster values (an imagery tile's ``.tif``, a COG); files by name
_READS = {"json": "json", "html": "html", "pbf": "mvt", "mvt": "mvt", "png": "png", "webp": "png",
          "tif": "geotiff"}


def format_read(fmt: str, download: bool = True) -> str:
    """The format name a read of ``fmt`` needs in a key's list: ``json``/``geojson`` pages are
    ``json`` (their downloads ``geojson``), ``html`` pages ``html``, vector tiles ``mvt``,
    picture tiles ``png`` (``webp`` too), raw values ``geotiff`` (``tif`` too), a file its
    format (``shp-gbk`` is ``shp``)."""
    if fmt in ("json", "geojson"):
        return "geojson" if download else "json"
    return _READS.get(fmt) or fmt.split("-")[0]


def reads_format(principal: Principal, fmt: str, download: bool = True) -> bool:
    """May this caller read data in ``fmt``? A key without a format list (every department's,
    an approved request's that asked for none): any. A key with one (an approved request's):
    exactly those formats — files, paged JSON/HTML and tiles alike (the issue: approval issues
    a "scope-limited key (datasets, formats, bbox/division)"; a page or a tile of the data is
    the data in that format)."""
    return not principal.formats or format_read(fmt, download) in principal.formats


def require_format(principal: Principal, fmt: str, download: bool = True) -> None:
    """Forbidden (403) unless :func:`reads_format`: called by every route that returns a
    layer's data (items and single features as pages or files, the change feed, the catalog's
    full downloads, vector and picture tiles, GetFeatureInfo) or imagery (tiles of every
    front, point values and statistics, scene COGs); the key's datasets and box are checked
    apart (:func:`can_see`, :func:`scope_box`)."""
    if not reads_format(principal, fmt, download):
        raise Forbidden(f"this key was granted the formats {', '.join(sorted(principal.formats or ()))}, "
                        f"not {format_read(fmt, download)!r}")


def scope_box(principal: Principal) -> tuple[float, float, float, float] | None:
    """The box (CGCS2000 degrees) a request's key was granted: features outside it are never
    returned (items, the change feed), drawn (tiles) or downloaded (clipped to it)."""
    return principal.bbox


def require_role(principal: Principal, role: Role) -> None:
    if principal.is_public:
        raise Unauthorized("an API key is required (Authorization: Bearer <key> or X-API-Key)")
    if not principal.has_role(role):
        raise Forbidden(f"this needs the {role!r} role; your key has {principal.role!r}")


def require_editor(principal: Principal, access: LayerAccess) -> None:
    """Who may change a layer's features (OGC API - Features Part 4): the editors of the
    department that owns it (and its stewards, whose role includes editing), and admins. Anyone
    else is refused before anything is read or written: 401 without a key, 403 with one."""
    if principal.is_public:
        raise Unauthorized("editing needs an API key of an editor of the layer's department")
    if principal.is_admin:
        return
    if not principal.has_role("editor"):
        raise Forbidden(f"editing needs the 'editor' role; your key has {principal.role!r}")
    if principal.department != access.department:
        raise Forbidden(f"layer {access.name!r} belongs to department {access.department!r}; editors of "
                        f"{principal.department!r} may not change it")




async def require_imagery(conn: psycopg.AsyncConnection, principal: Principal, registry: Registry) -> None:
    """NotFound unless the caller may see imagery (the DEM layer's sharing rule)."""
    try:
        await require_layer(conn, principal, registry, IMAGERY_RULE_LAYER)
    except NotFound:
        raise NotFound("imagery collection not found", parameter="collectionId") from None
