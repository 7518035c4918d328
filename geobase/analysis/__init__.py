"""Analyses over the layers, with their heavy work in PostGIS next to the indexes.

One module per analysis, and what they share:

- :mod:`~geobase.analysis.common`: area units, the check-only mode of job submission, the
  caller's view of a layer, the report's layer versions, the read-only snapshot;
- :mod:`~geobase.analysis.site_check`: a project red line against every layer and the site rules;
- :mod:`~geobase.analysis.tabulate`: areas by class of layer A x class of layer B;
- :mod:`~geobase.analysis.conflicts`: plan conflicts of the declared rules;
- :mod:`~geobase.analysis.change`: the transition matrix between two versions of a layer;
- :mod:`~geobase.analysis.proximity`: features within a distance of water bodies;
- :mod:`~geobase.analysis.slope`: farmland on steep slopes (DEM slope, zonal statistics);
- :mod:`~geobase.analysis.rules`: the declared rules and their filters compiled to SQL;
- :mod:`~geobase.analysis.input`: input geometries (parse, reproject, refuse what would mislead);
- :mod:`~geobase.analysis.output`: JSON, GeoJSON, CSV and HTML renderings of a result;
- :mod:`~geobase.analysis.processes`: the process registry and the one function that runs one;
- :mod:`~geobase.analysis.jobs`: analysis jobs (admission, run, owners, documents) on the one
  job manager :mod:`geobase.jobs`.

The analyses themselves are importable from here (``analysis.site_check(...)``).
"""

from geobase.analysis.change import change
from geobase.analysis.conflicts import conflicts
from geobase.analysis.proximity import buffer
from geobase.analysis.site_check import site_check
from geobase.analysis.slope import steep_farmland
from geobase.analysis.tabulate import tabulate

__all__ = ["buffer", "change", "conflicts", "site_check", "steep_farmland", "tabulate"]
