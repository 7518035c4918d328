"""Byte ranges of one delivered file, on disk or a member of a zip, for the numpy readers
(:mod:`geobase.ingest.shp`, :mod:`geobase.ingest.dbf`).

Why: a Shapefile is usually delivered zipped. GDAL reads it in place through ``/vsizip/``; the
numpy readers read it in place too, as a stream: their batches ask for increasing offsets, so a
compressed member is inflated once, front to back, and never extracted to disk (the zip was
checked by :func:`geobase.ingest.sources.check_zip` when the delivery was resolved).
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath


class FileBlob:
    """A file on disk."""

    def __init__(self, path: Path):
        self.path = path
        self.name = path.name
        self.size = path.stat().st_size

    def read_at(self, offset: int, size: int) -> bytes:
        with self.path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(size)

    def close(self) -> None:
        pass


class ZipBlob:
    """A member of a zip, read forwards through one open stream (reopened only to go back)."""

    def __init__(self, archive: Path, member: str):
        self.zf = zipfile.ZipFile(archive)
        self.member = member
        self.name = PurePosixPath(member).name
        self.size = self.zf.getinfo(member).file_size
        self._fh = None
        self._pos = 0

    def read_at(self, offset: int, size: int) -> bytes:
        if self._fh is None or offset < self._pos:
            if self._fh is not None:
                self._fh.close()
            self._fh, self._pos = self.zf.open(self.member), 0
        if offset > self._pos:
            self._fh.seek(offset)  # forwards: inflates and discards
        data = self._fh.read(size)
        self._pos = offset + len(data)
        return data

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self.zf.close()


def sidecars(gdal_path: str, suffixes: tuple[str, ...]) -> dict[str, FileBlob | ZipBlob] | None:
    """The files ``suffixes`` (e.g. ``.shp``, ``.shx``, ``.dbf``) of the Shapefile GDAL opens as
    ``gdal_path`` (a path on disk, or ``/vsizip/<archive>.zip/<member>.shp`` as
    :func:`geobase.ingest.sources.resolve` writes it); None when one is missing or the path is
    anything else."""
    if gdal_path.startswith("/vsizip/"):
        rest = gdal_path[len("/vsizip/"):]
        cut = rest.lower().find(".zip/")
        if cut < 0:
            return None
        archive, member = Path(rest[: cut + 4]), rest[cut + 5:]
        if not member.lower().endswith(".shp") or not archive.is_file():
            return None
        with zipfile.ZipFile(archive) as zf:
            names = {n.lower(): n for n in zf.namelist()}
        stem = member[:-4].lower()
        found = {s: names.get(stem + s) for s in suffixes}
        if not all(found.values()):
            return None
        return {s: ZipBlob(archive, name) for s, name in found.items()}
    if gdal_path.startswith("/vsi"):
        return None
    shp = Path(gdal_path)
    if shp.suffix.lower() != ".shp" or not shp.is_file():
        return None
    out = {}
    for s in suffixes:
        cands = [shp.with_suffix(s), shp.with_suffix(s.upper())] + [
            c for c in shp.parent.iterdir() if c.stem == shp.stem and c.suffix.lower() == s]
        path = next((c for c in cands if c.is_file()), None)
        if path is None:
            return None
        out[s] = FileBlob(path)
    return out
