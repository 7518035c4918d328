"""Uploaded files: the one place that saves an upload and opens or unpacks a zip, for every
endpoint that takes a file (the steward's ingest, the public site check of an uploaded file).

Why one routine: an upload is the easiest way to attack a server's disk. Each archive is
checked before a byte is extracted — member names that are absolute or climb out (zip slip),
symbolic links, nested archives (a zip inside a zip hides its own bomb from these checks),
too many members, members compressed beyond a ratio, and a total size beyond a limit — and
extraction then counts the bytes it actually writes, so a lying header cannot get past the
total either. Temporary folders are removed by the callers' ``TemporaryDirectory``/``rmtree``.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from geobase.errors import InvalidInput, PayloadTooLarge
from geobase.settings import Settings

#: Ratio checks apply to members at least this large (tiny files compress absurdly well).
RATIO_MIN_SIZE = 1024 * 1024
#: Suffixes of archives that are refused inside an archive.
NESTED_ARCHIVES = (".zip", ".7z", ".rar", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".kmz")
#: Paths of the app that accept multipart uploads (the gate's body limit picks per route).
INGEST_UPLOAD_RE = re.compile(r"^/admin/layers/[^/]+/ingest$")


@dataclass(frozen=True)
class ZipLimits:
    """What an archive may hold: total uncompressed bytes, member count, compression ratio."""

    max_total_bytes: int
    max_members: int
    max_ratio: int = 200

    @classmethod
    def for_ingest(cls, settings: Settings) -> ZipLimits:
        """Deliveries of whole layers (a county's parcels as a FileGDB: GBs, 1000s of members)."""
        return cls(settings.upload_max_unpacked_bytes, settings.upload_max_members, settings.upload_max_ratio)

    @classmethod
    def for_public(cls, settings: Settings) -> ZipLimits:
        """A site's red line: a few small files."""
        return cls(settings.public_upload_max_unpacked_bytes, min(settings.upload_max_members, 100),
                   settings.upload_max_ratio)


def body_limit(settings: Settings, path: str) -> int:
    """The largest request body of an upload route: the ingest of a whole layer may be large,
    every other upload (the public site check) has the small public limit."""
    return settings.max_upload_bytes if INGEST_UPLOAD_RE.match(path) else settings.public_upload_max_bytes


def save_upload(source: BinaryIO, dest: Path, limit: int, parameter: str = "file") -> int:
    """Stream an upload to ``dest``, refusing it (413) past ``limit`` bytes and (400) when empty."""
    size = 0
    with open(dest, "wb") as out:
        while chunk := source.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"{parameter}: larger than the upload limit of {limit} bytes",
                                      parameter=parameter)
            out.write(chunk)
    if size == 0:
        raise InvalidInput(f"{parameter}: the upload is empty", parameter=parameter)
    return size


def check_zip(path: Path, limits: ZipLimits, parameter: str = "path", label: str | None = None) -> zipfile.ZipFile:
    """Open a zip after refusing slip, absolute names, links, nested archives, too many members
    and decompression bombs (by ratio and by total). The caller closes the returned archive."""
    label = label or path.name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidInput(f"{label}: not a readable zip archive ({exc})", parameter=parameter) from None
    try:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise InvalidInput(f"{label}: refused: the archive holds {len(infos)} members (limit "
                               f"{limits.max_members})", parameter=parameter)
        total = 0
        for info in infos:
            name = info.filename
            pure = PurePosixPath(name.replace("\\", "/"))
            if name.startswith(("/", "\\")) or pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
                raise InvalidInput(f"{label}: refused: archive member {name!r} has an absolute path",
                                   parameter=parameter)
            if ".." in pure.parts:
                raise InvalidInput(f"{label}: refused: archive member {name!r} climbs out of the archive (../)",
                                   parameter=parameter)
            if "\0" in name:
                raise InvalidInput(f"{label}: refused: archive member {name!r} has a NUL in its name",
                                   parameter=parameter)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)  # 0 when the archiver recorded no Unix type
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise InvalidInput(f"{label}: refused: archive member {name!r} is a link or special file",
                                   parameter=parameter)
            if not info.is_dir() and pure.name.lower().endswith(NESTED_ARCHIVES):
                raise InvalidInput(f"{label}: refused: archive member {name!r} is itself an archive (nested "
                                   "archives are not unpacked); upload its contents", parameter=parameter)
            total += info.file_size
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size >= RATIO_MIN_SIZE and ratio > limits.max_ratio:
                raise InvalidInput(f"{label}: refused as a zip bomb: member {name!r} expands {ratio:.0f}:1 "
                                   f"(limit {limits.max_ratio}:1)", parameter=parameter)
        if total > limits.max_total_bytes:
            raise InvalidInput(f"{label}: refused as a zip bomb: {total} bytes uncompressed "
                               f"(limit {limits.max_total_bytes})", parameter=parameter)
    except BaseException:
        zf.close()
        raise
    return zf


def extract_zip(path: Path, dest: Path, limits: ZipLimits, parameter: str = "file",
                label: str | None = None) -> list[Path]:
    """Unpack a checked zip into ``dest`` (which must be empty and private to the caller),
    counting the bytes actually written against the limits; returns the files written."""
    label = label or path.name
    root = dest.resolve()
    written: list[Path] = []
    total = 0
    with check_zip(path, limits, parameter, label) as zf:
        for info in zf.infolist():
            target = (root / PurePosixPath(info.filename.replace("\\", "/"))).resolve()
            if root != target and root not in target.parents:  # belt and braces after check_zip
                raise InvalidInput(f"{label}: refused: archive member {info.filename!r} escapes the folder",
                                   parameter=parameter)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            member_bytes = 0
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        member_bytes += len(chunk)
                        total += len(chunk)
                        if total > limits.max_total_bytes or (
                                member_bytes >= RATIO_MIN_SIZE
                                and member_bytes > limits.max_ratio * max(info.compress_size, 1)):
                            raise InvalidInput(f"{label}: refused as a zip bomb: member {info.filename!r} "
                                               "expands beyond what its header declares", parameter=parameter)
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
                raise InvalidInput(f"{label}: cannot unpack member {info.filename!r}: {exc}",
                                   parameter=parameter) from None
            written.append(target)
    return written


def remove_tree(path: Path) -> None:
    """Remove an upload's folder, whatever is in it (the callers' finally)."""
    shutil.rmtree(path, ignore_errors=True)
