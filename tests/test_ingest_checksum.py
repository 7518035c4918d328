"""The delivery's checksum begun before the delivery is resolved (``geobase ingest`` hashes it
while its modules are imported, :func:`geobase.ingest.sources.start_checksum`) is the one of
the files the load reads, as they are when it reads them: a guess that names other files, or
files changed since, is hashed again (:func:`geobase.ingest.sources.checksum_of`)."""

from __future__ import annotations

from pathlib import Path

from geobase.ingest import sources


def _shapefile(tmp_path: Path) -> Path:
    d = tmp_path / "DLTB"
    d.mkdir()
    for ext, data in ((".shp", b"shp" * 1000), (".shx", b"shx"), (".dbf", b"dbf" * 500), (".prj", b"prj"),
                      (".cpg", b"GBK")):
        (d / f"DLTB{ext}").write_bytes(data)
    (d / "OTHER.dbf").write_bytes(b"not part of the delivery")
    return d / "DLTB.shp"


def _delivered(shp: Path) -> list[Path]:
    return [shp.with_suffix(ext) for ext in (".shx", ".dbf", ".prj", ".cpg", ".shp")]


def test_the_early_checksum_is_taken_for_the_files_it_hashed(tmp_path):
    shp = _shapefile(tmp_path)
    sources.start_checksum(shp)
    early = sources._EARLY.get(sources._files_key(_delivered(shp)))
    assert early is not None  # the guess named exactly the delivered files (not OTHER.dbf)
    assert sources.checksum_of(_delivered(shp)) is early
    assert early() == sources.sha256_files(_delivered(shp))
    assert sources._files_key(_delivered(shp)) not in sources._EARLY  # taken once


def test_a_file_changed_after_the_early_start_is_hashed_again(tmp_path):
    shp = _shapefile(tmp_path)
    sources.start_checksum(shp)
    stale = sources.sha256_files(_delivered(shp))
    with open(shp.with_suffix(".dbf"), "ab") as fh:  # another size: another file
        fh.write(b"one more record")
    got = sources.checksum_of(_delivered(shp))()
    assert got == sources.sha256_files(_delivered(shp)) != stale


def test_other_files_than_guessed_are_hashed_on_their_own(tmp_path):
    shp = _shapefile(tmp_path)
    sources.start_checksum(shp)
    fewer = [p for p in _delivered(shp) if p.suffix != ".cpg"]
    assert sources.checksum_of(fewer)() == sources.sha256_files(fewer)
    assert sources.checksum_of(_delivered(shp))() == sources.sha256_files(_delivered(shp))
