"""A key granted a list of formats reads imagery in exactly those formats, over HTTP (issue 19's
"scope-limited key (datasets, formats, bbox/division)" on issue 20's imagery): picture tiles
(PNG and WebP, on every front: XYZ, WMTS RESTful and KVP) are ``png``, a tile's raw values
(``.tif``) and a scene's COG ``geotiff``, point values and polygon statistics ``json``. The one
rule: :func:`geobase.security.reads_format`, as for the layers (tests/test_scoped_formats.py).

Keys of the same dataset (imagery follows the DEM's sharing, so ``dem``) and department, each
granted one list; metadata (tilesets, the STAC collection) is not data: every key reads it."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from conftest import LiveServer, create_database, drop_database, settings_for, tile_xy
from imagery_common import BANDS4, write_scene
from test_scoped_keys import ENV

from geobase.imagery.ingest import add_image

BOUNDS = (118.0, 29.0, 118.2, 29.2)
LON, LAT = 118.1, 29.1
GRANTS = {"csv": ["csv"], "png": ["png"], "json": ["json"], "geotiff": ["geotiff"],
          "views": ["json", "html", "mvt", "png", "geotiff"]}


@pytest.fixture(scope="module")
def keyed(pg_server, template_db, tmp_path_factory):
    """A server with one 4-band scene (collection ``fmt``), a key per grant, the item's id."""
    from geobase import keys

    db = f"gb_imgfmt_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, db, template_db)
    folder = tmp_path_factory.mktemp("imgfmt")
    settings = settings_for(url, folder)
    scene = write_scene(folder / "scene.tif", BOUNDS, [30, 60, 90, 200])
    item = add_image(settings, scene, "fmt", when="2024-05-01", bands=BANDS4)
    with psycopg.connect(url, autocommit=True) as conn:
        made = {name: {"X-API-Key": keys.create_scoped_key(
            conn, name=f"imgfmt {name}", department="forestry", expires_days=1, created_by="test",
            scope={"datasets": ["dem"], "formats": formats, "bbox": None}).token}
            for name, formats in GRANTS.items()}
    srv = LiveServer(settings, env=ENV)
    yield srv, made, item["id"]
    srv.stop()
    drop_database(pg_server, db)


def _reads(srv, key: dict, item: str) -> dict[str, int]:
    """The status of each kind of imagery read with ``key``."""
    x, y = tile_xy(LON, LAT, 12)
    poly = {"type": "Polygon", "coordinates": [[[118.05, 29.05], [118.15, 29.05], [118.15, 29.15],
                                                [118.05, 29.15], [118.05, 29.05]]]}
    xyz = f"/imagery/fmt/tiles/WebMercatorQuad/12/{x}/{y}"
    kvp = {"SERVICE": "WMTS", "REQUEST": "GetTile", "LAYER": "imagery.fmt", "STYLE": "default",
           "TILEMATRIXSET": "WebMercatorQuad", "TILEMATRIX": "12", "TILEROW": str(y), "TILECOL": str(x)}
    with srv.client(headers=key) as c:
        return {
            "png tile": c.get(f"{xyz}.png", params={"bands": "b3,b2,b1"}).status_code,
            "webp tile": c.get(f"{xyz}.webp", params={"bands": "b3,b2,b1"}).status_code,
            "tif tile": c.get(f"{xyz}.tif", params={"bands": "b3,b2,b1"}).status_code,
            "wmts rest": c.get(f"/imagery/fmt/wmts/default/WebMercatorQuad/12/{y}/{x}.png").status_code,
            "wmts webp": c.get(f"/imagery/fmt/wmts/ndvi/WebMercatorQuad/12/{y}/{x}.webp").status_code,
            "wmts kvp": c.get("/wmts", params=kvp).status_code,
            "point": c.get(f"/imagery/fmt/point/{LON},{LAT}").status_code,
            "statistics": c.post("/imagery/fmt/statistics", params={"expression": "(b4-b3)/(b4+b3)"},
                                 json=poly).status_code,
            "cog": c.get(f"/imagery/fmt/items/{item}/data.tif", headers={"Range": "bytes=0-99"}).status_code,
        }


#: which grant each read needs
NEEDS = {"png tile": "png", "webp tile": "png", "tif tile": "geotiff", "wmts rest": "png", "wmts webp": "png",
         "wmts kvp": "png", "point": "json", "statistics": "json", "cog": "geotiff"}


@pytest.mark.parametrize("grant", list(GRANTS))
def test_each_imagery_read_needs_its_format(keyed, grant):
    srv, keys_, item = keyed
    got = _reads(srv, keys_[grant], item)
    want = {read: (206 if read == "cog" else 200) if fmt in GRANTS[grant] else 403 for read, fmt in NEEDS.items()}
    assert got == want


def test_a_cached_tile_is_refused_too(keyed):
    """The tile cache serves every caller's view of imagery the same bytes: a tile another key
    has just had drawn (a cache hit) is still refused to a key without ``png``."""
    srv, keys_, _ = keyed
    x, y = tile_xy(LON, LAT, 13)
    path = f"/imagery/fmt/tiles/WebMercatorQuad/13/{x}/{y}.png"
    with srv.client() as c:
        assert c.get(path, headers=keys_["png"]).status_code == 200
        hit = c.get(path, headers=keys_["views"])
        assert hit.status_code == 200 and hit.headers["X-Tile-Cache"] == "hit"
        refused = c.get(path, headers=keys_["csv"])
        assert refused.status_code == 403 and "png" in refused.json()["description"], refused.text


def test_metadata_is_not_data(keyed):
    srv, keys_, _ = keyed
    with srv.client() as c:
        for key in keys_.values():
            assert c.get("/imagery/fmt/tiles", headers=key).status_code == 200
            assert c.get("/imagery/fmt/tiles/WebMercatorQuad", headers=key).status_code == 200
            assert c.get("/stac/collections/fmt", headers=key).status_code == 200
