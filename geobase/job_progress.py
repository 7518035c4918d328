"""The one unit of ``catalog.jobs.progress``: percent, 0 to 100, for every kind of job.

Why percent: OGC API - Processes' ``statusInfo.progress`` is an integer 0-100 and the job
documents of ``/jobs/{id}`` (analysis) and ``/admin/jobs/{id}`` (ingest) are read by the same
clients. Ingest jobs used to store a fraction (0-1) and analysis jobs a percentage, so the
same column meant two things; migration ``0007_job_progress_percent`` converted the stored
ingest rows and a CHECK keeps every value within 0-100. Writers call :func:`percent`, readers
call :func:`reported`.
"""

from __future__ import annotations

#: what a finished (successful) job stores
DONE = 100.0
#: a running job never claims more than this: 100 means its outcome is recorded
RUNNING_MAX = 99.0


def percent(done: float, total: float | None) -> float:
    """The stored progress of a running job that has done ``done`` of ``total`` units (0 when
    the total is unknown), capped below :data:`DONE` until the job records its outcome."""
    if not total or total <= 0:
        return 0.0
    return round(min(max(100.0 * done / total, 0.0), RUNNING_MAX), 1)


def reported(stored: float | None) -> int:
    """The integer percentage a job document shows (statusInfo ``progress``): truncated, so a
    job never looks further along than it is."""
    return int(stored or 0)
