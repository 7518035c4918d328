"""Indicator models (指标模型) with monitoring and warnings (监测评估预警), GB/T 39972-2021.

One home per concern: the models declared in ``layers/indicators/*.yaml`` and their terms
(``spec``), the SQL of a term per township (``compute``), the recompute of queued versions,
incremental or full (``engine``), thresholds and warnings (``warnings``), the planning targets
from CSV (``targets``), the recompute as a job and the server's monitor (``monitor``), and what
the API, CLI and dashboard read (``service``). Catalog SQL: geobase/catalog/indicators.py;
HTTP: api/indicators.py; CLI: geobase/cli/indicators.py; page: tiles/templates/dashboard.html.
"""
