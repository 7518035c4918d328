"""Federation: this instance follows a layer of another geobase instance (county -> city ->
province) and mirrors it as one county partition of its own layer of the same name.

A *follow* names the source (its base URL, a collection, an optional API key) and the county
(``division``) the mirror fills. One pass (:func:`run_follow`) reads the source's current
version, pulls its change feed (``/collections/{id}/changes?from=a&to=b``, GeoJSON pages at full
coordinate precision) since the last source version applied here, and applies it through the
ordinary ingest as new versions of the county: added and changed features as an ``upsert``,
removed ones as a ``delete``. The first pass (and a source whose history restarted) pulls
everything (``from=0``) and applies it as a ``replace`` of the county.

Resuming after a broken link: the source version a pass brought the mirror to is recorded in
the mirror's own version history — the delivery name of each version the pass commits,
``follow-<name>-<a>-<b>-<k>of<n>.geojson`` — so it is committed atomically with the rows it
describes. A pass killed while pulling commits nothing; one killed between its parts leaves
part k of n committed, and the next pass starts again from ``a``: applying a part twice
changes nothing (an upsert of rows already current, a delete of keys already gone), so the
mirror converges with no row lost or duplicated.

The follows themselves (where the source is, the key) are configuration, kept in
``<data_dir>/follows.json`` (mode 600: it may hold a key)."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from geobase.errors import InvalidInput, NotFound, ServiceUnavailable
from geobase.settings import Settings
from geobase.specs import get_registry
from geobase.storage import check_division

log = logging.getLogger("geobase.federation")

FOLLOWS_FILE = "follows.json"
#: coordinates at full double precision (15 decimals round-trip every double of a degree value)
PRECISION = 15
PAGE_SIZE = 1000
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class Follow:
    name: str
    url: str
    collection: str
    division: str
    key: str | None = None

    def delivery(self, a: int, b: int, k: int, n: int) -> str:
        return f"follow-{self.name}-{a}-{b}-{k}of{n}.geojson"


def _path(settings: Settings) -> Path:
    return settings.data_path / FOLLOWS_FILE


def load_follows(settings: Settings) -> list[Follow]:
    try:
        return [Follow(**f) for f in json.loads(_path(settings).read_text(encoding="utf-8"))]
    except FileNotFoundError:
        return []


def _save(settings: Settings, follows: list[Follow]) -> None:
    path = _path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump([asdict(f) for f in follows], fh, indent=2)
    os.replace(tmp, path)


def get_follow(settings: Settings, name: str) -> Follow:
    found = next((f for f in load_follows(settings) if f.name == name), None)
    if found is None:
        raise NotFound(f"no follow named {name!r} (see `geobase follow list`)", parameter="name")
    return found


def add_follow(settings: Settings, url: str, collection: str, division: str, key: str | None = None,
               name: str | None = None) -> Follow:
    """Record a follow after checking that the source answers for the collection and that this
    instance has the same layer (the mirror is its county ``division``)."""
    division = check_division(division)
    get_registry(settings).layer(collection)  # an unknown layer here is refused now
    follows = load_follows(settings)
    name = name or f"{collection}-{division}"
    if not _NAME.match(name) or any(f.name == name for f in follows):
        raise InvalidInput(f"--name: {name!r} is taken or not a plain lower-case name", parameter="name")
    follow = Follow(name=name, url=url.rstrip("/"), collection=collection, division=division, key=key)
    with _client(follow) as client:
        source_version(client, follow)
    _save(settings, [*follows, follow])
    return follow


def remove_follow(settings: Settings, name: str) -> Follow:
    follow = get_follow(settings, name)
    _save(settings, [f for f in load_follows(settings) if f.name != name])
    return follow


# ------------------------------------------------------------------------------------------
# the source
# ------------------------------------------------------------------------------------------
def _client(follow: Follow, timeout: float = 60.0) -> httpx.Client:
    headers = {"Accept": "application/geo+json, application/json"}
    if follow.key:
        headers["X-API-Key"] = follow.key
    return httpx.Client(base_url=follow.url, headers=headers, timeout=timeout, follow_redirects=False)


def _get(client: httpx.Client, url: str, params: dict | None = None) -> dict:
    try:
        r = client.get(url, params=params)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"source {client.base_url}: {type(exc).__name__}: {exc}") from None
    if r.status_code != 200:
        raise ServiceUnavailable(f"source {client.base_url}{url}: HTTP {r.status_code}: {r.text[:300]}")
    return r.json()


def source_version(client: httpx.Client, follow: Follow) -> int:
    """The source's current version of the collection (0: it has none yet)."""
    doc = _get(client, f"/collections/{quote(follow.collection)}")
    return int(doc.get("currentVersion") or 0)


def pull_changes(client: httpx.Client, follow: Follow, a: int, b: int, page_size: int = PAGE_SIZE,
                 on_page: Callable[[int], None] | None = None, attributes: frozenset[str] = frozenset()) -> list[dict]:
    """Every feature of the change feed a -> b (all pages), each with its ``change``; refused
    at the first page when its features lack any of ``attributes``."""
    features: list[dict] = []
    url: str | None = f"/collections/{quote(follow.collection)}/changes"
    params: dict | None = {"from": a, "to": b, "limit": page_size, "precision": PRECISION, "f": "json"}
    page = 0
    while url:
        doc = _get(client, url, params)
        if doc.get("type") != "FeatureCollection":
            raise ServiceUnavailable(f"source {client.base_url}: the change feed is not a FeatureCollection")
        if page == 0:
            _check_attributes(follow, attributes, doc["features"])
        features += doc["features"]
        page += 1
        if on_page:
            on_page(page)
        url = next((ln["href"] for ln in doc.get("links", []) if ln.get("rel") == "next"), None)
        params = None  # the next link carries them
    return features


# ------------------------------------------------------------------------------------------
# the mirror
# ------------------------------------------------------------------------------------------
_DELIVERY = re.compile(r"^follow-(?P<name>[a-z0-9_-]+)-(?P<a>\d+)-(?P<b>\d+)-(?P<k>\d+)of(?P<n>\d+)\.geojson$")


def applied_version(settings: Settings, follow: Follow) -> int:
    """The source version the mirror is at: ``b`` of the last pass whose every part committed,
    else ``a`` of the last pass (0: nothing applied yet), read from the county's versions."""
    from geobase.catalog.history import list_versions

    for v in reversed(list_versions(settings, follow.collection, follow.division)):
        m = _DELIVERY.match(v["source_name"] or "")
        if m and m["name"] == follow.name:
            return int(m["b"]) if m["k"] == m["n"] else int(m["a"])
    return 0


def _check_attributes(follow: Follow, names: frozenset[str], features: list[dict]) -> None:
    """Refuse a feed that lacks attributes of the layer (hidden from the follow's key): the
    mirror would silently lose them."""
    for f in features[:1]:
        missing = names - set(f.get("properties") or {})
        if missing:
            raise InvalidInput(f"the source hides {', '.join(sorted(missing))} of {follow.collection!r} from this "
                               "follow: give it a key that sees every attribute (--key)", parameter="key")


def _parts(features: list[dict], full: bool) -> list[tuple[str, list[dict]]]:
    def clean(f: dict) -> dict:
        props = {k: v for k, v in (f.get("properties") or {}).items() if k != "change"}
        return {"type": "Feature", "id": f.get("id"), "properties": props, "geometry": f.get("geometry")}

    if full:
        return [("replace", [clean(f) for f in features])]
    upsert = [clean(f) for f in features if (f.get("properties") or {}).get("change") in ("added", "changed")]
    delete = [clean(f) for f in features if (f.get("properties") or {}).get("change") == "removed"]
    return [(mode, rows) for mode, rows in (("upsert", upsert), ("delete", delete)) if rows]


#: how a part is committed: ``apply(path, mode=, division=, on_error=, user=)`` -> its version
#: number (None: nothing changed); the ingest, given by the adapter (the core does not import it)
Apply = Callable[..., "int | None"]


def run_follow(settings: Settings, follow: Follow, apply: Apply, *, page_size: int = PAGE_SIZE,
               echo: Callable[[str], None] = lambda _m: None) -> dict:
    """One pass: bring the mirror to the source's current version, each part committed by
    ``apply`` as one version of the county. Returns what it did."""
    a = applied_version(settings, follow)
    with _client(follow) as client:
        b = source_version(client, follow)
        if b == a:
            return {"follow": follow.name, "at": a, "applied": []}
        full = a == 0 or b < a  # first pass, or the source's history restarted: take everything
        if full:
            a = 0
        names = frozenset(get_registry(settings).layer(follow.collection).attribute_names)
        features = pull_changes(client, follow, a, b, page_size, lambda p: echo(f"pulled page {p}"), names)
    if b == 0 or not features and full:
        return {"follow": follow.name, "at": a, "applied": []}
    parts = _parts(features, full)
    applied = []
    with tempfile.TemporaryDirectory(prefix="geobase-follow-") as tmp:
        for k, (mode, rows) in enumerate(parts, start=1):
            path = Path(tmp) / follow.delivery(a, b, k, len(parts))
            path.write_text(json.dumps({"type": "FeatureCollection", "features": rows}, ensure_ascii=False),
                            encoding="utf-8")
            version = apply(path, mode=mode, division=follow.division,
                            on_error="skip" if mode == "delete" else "reject", user=f"follow:{follow.name}")
            applied.append({"mode": mode, "features": len(rows), "version": version})
            echo(f"applied part {k}/{len(parts)}: {mode} of {len(rows)} features -> version {version}")
    return {"follow": follow.name, "from": a, "at": b, "applied": applied}
