# The two commands of the README:
#   make demo   set everything up, ingest the sample county, serve the web map on :8000
#   make test   set everything up and run the test suite (what CI runs)
#   make interop  also install QGIS 3.22 and run the real-client tests that need it (tests/interop)
#   make interop-sedona  install the Sedona engine and check it against PostGIS (tests/interop_sedona)
#   make bench      install the bench extras (tipg, titiler, ...), check the harness, run the benchmarks
.PHONY: demo test interop interop-sedona setup bench bench-check bench-table lint clean

demo:
	scripts/setup.sh
	.venv/bin/geobase demo

test:
	scripts/setup.sh --test
	.venv/bin/python -m pytest $(PYTEST_ARGS)

interop:
	scripts/setup.sh --interop
	.venv/bin/python -m pytest tests/interop -m interop $(PYTEST_ARGS)

interop-sedona:
	scripts/setup.sh --sedona
	.venv/bin/python -m pytest tests/interop_sedona -m interop $(PYTEST_ARGS)

# the harness's own checks against tipg (tests marked `bench`) run first: a figure is printed
# only by a harness whose comparison is known to be like with like
bench: bench-check
	.venv/bin/python bench/run.py $(BENCH_ARGS)

bench-check:
	scripts/setup.sh --bench
	.venv/bin/python -m pytest tests -m bench $(PYTEST_ARGS)

# the README's benchmark table from bench/results (BENCH_TABLE_ARGS="--parcels 200000")
bench-table:
	.venv/bin/python bench/table.py $(BENCH_TABLE_ARGS)

lint:
	.venv/bin/ruff check geobase ingest api tiles tests bench

# the demo cluster goes with its data directory (it may live outside it, under /var/lib/geobase,
# when the repo is under /root): a catalog without its COGs would answer 404 for DEM tiles
clean:
	-.venv/bin/geobase db remove --yes
	rm -rf .geobase .pytest_cache
