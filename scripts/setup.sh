#!/usr/bin/env bash
# Idempotent machine + project setup for geobase (Debian/Ubuntu; root or sudo for apt).
#   scripts/setup.sh          runtime: PostGIS, npm + MapLibre GL JS + Swagger UI, .venv with geobase
#   scripts/setup.sh --test   also: chromium (browser tests), libatomic1 (Playwright's node driver
#                             links it; minimal Debian images lack it), GDAL CLI tools,
#                             QGIS 3.22 (python3-qgis), the MapLibre style validator, dev extras
#   scripts/setup.sh --bench  also: bench extras (tipg, ...)
#   scripts/setup.sh --interop  the same as --test (for `make interop`)
#   scripts/setup.sh --sedona   also: the Sedona engine of the batch analyses (extra `sedona`,
#                               for `make interop-sedona` and `geobase analysis ... --engine sedona`)
# A second run does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-run}

# python3-freetype + fonts-dejavu-core: the map's glyph set (digits, Latin) is built from them below
# fonts-wqy-zenhei: the CJK font map sheets (POST /maps/print) embed for their Chinese text
APT_PKGS=(postgresql-15-postgis-3 python3-freetype fonts-dejavu-core fonts-wqy-zenhei)
command -v npm >/dev/null || APT_PKGS+=(npm)   # any working npm will do (Debian's or NodeSource's)
case "$MODE" in
  # a CJK font so that the browser test's screenshots show the Chinese layer names, not boxes
  # python3-qgis: Debian's QGIS 3.22, driven headless by tests/test_qgis_style.py (~20 s)
  --test|--interop) APT_PKGS+=(gdal-bin fonts-wqy-microhei libatomic1 python3-qgis); command -v chromium >/dev/null || APT_PKGS+=(chromium) ;;
  # nginx-light: bench_tiles serves the cached tile files with it, the physical ceiling of a tile cache
  --bench) APT_PKGS+=(gdal-bin nginx-light) ;;
esac

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: please install: ${missing[*]} (PostgreSQL 15 + PostGIS 3, npm, chromium)" >&2
    exit 1
  fi
fi

# Python environment: reinstall only when pyproject.toml changed.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
EXTRAS="dev"
[ "$MODE" = "--bench" ] && EXTRAS="dev,bench"
[ "$MODE" = "--sedona" ] && EXTRAS="dev,sedona"
STAMP=".venv/.geobase-$(sha256sum pyproject.toml | cut -c1-16)-${EXTRAS/,/-}"
if [ ! -f "$STAMP" ]; then
  echo "setup: installing geobase[$EXTRAS] into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[$EXTRAS]"
  # pycsw 2.6.2 pins OWSLib<0.29 (the tests need a newer OWSLib): installed without its pins,
  # its dependencies are in pyproject.toml (geobase/opendata/csw.py)
  .venv/bin/pip install -q --no-deps "pycsw==2.6.2"
  rm -f .venv/.geobase-*
  touch "$STAMP"
fi

# Front-end assets from the npm registry (never committed, never from a CDN at run time: the
# server hands them out itself, so every page works on an intranet without internet).
NPM_PKGS=()
[ -f .vendor/node_modules/maplibre-gl/dist/maplibre-gl.js ] || NPM_PKGS+=(maplibre-gl@4)
[ -f .vendor/node_modules/swagger-ui-dist/swagger-ui-bundle.js ] || NPM_PKGS+=(swagger-ui-dist@5)
# MapLibre's style validator (gl-style-validate: the tests check the generated style with it)
[ -f .vendor/node_modules/@maplibre/maplibre-gl-style-spec/dist/gl-style-validate.mjs ] ||
  NPM_PKGS+=(@maplibre/maplibre-gl-style-spec@20)
if [ ${#NPM_PKGS[@]} -gt 0 ]; then
  echo "setup: installing ${NPM_PKGS[*]} from npm into .vendor/"
  mkdir -p .vendor
  (cd .vendor && [ -f package.json ] || echo '{"name":"geobase-vendor","private":true}' > package.json)
  npm install --prefix .vendor --no-audit --no-fund --loglevel=error "${NPM_PKGS[@]}" >/dev/null
fi
# The map's SDF glyph ranges (parcel codes' digits and letters; Chinese uses the browser's font),
# built once from Debian's DejaVu Sans with Debian's python3 and its FreeType (~1 min)
[ -f ".vendor/glyphs/DejaVu Sans Book/0-255.pbf" ] || /usr/bin/python3 scripts/build_glyphs.py .vendor/glyphs
echo "setup: ok"
