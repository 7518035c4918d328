"""Settings are grouped by concern and checked at start (issue #14): a bad GEOBASE_* value stops
the real CLI and the app factory with a message naming the variable, not a 500 later.

Every existing variable name keeps working: the grouping is in the settings classes, the
environment names are the fields' names as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from geobase.errors import ConfigError
from geobase.settings import CONCERNS, Settings, check_settings, get_settings, load_settings

REPO = Path(__file__).resolve().parents[1]

BAD = [
    ("GEOBASE_ANALYSIS_ROLE", "analist", "is not a role"),
    ("GEOBASE_MAX_LIMIT", "-5", "greater than or equal to 1"),
    ("GEOBASE_RATE_LIMIT_PER_S", "-1", "greater than or equal to 0"),
    ("GEOBASE_DATABASE_URL", "mysql://root:secret@db/geo", "not a PostgreSQL URL"),
    ("GEOBASE_PUBLIC_URL", "onemap.example.gov.cn", "not an http(s) URL"),
    ("GEOBASE_TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.300", "not an IP address"),
    ("GEOBASE_LOG_LEVEL", "verbose", "not a log level"),
    ("GEOBASE_PORT", "eighty", "valid integer"),
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOBASE_")}
    env.update(extra)
    return env


@pytest.mark.parametrize(("variable", "value", "says"), BAD[:4])
def test_a_bad_value_stops_the_real_server_naming_the_variable(variable, value, says, tmp_path) -> None:
    """`geobase serve` (what LiveServer and production run) refuses to start; no traceback."""
    proc = subprocess.run([sys.executable, "-m", "geobase.cli", "serve", "--no-prepare", "--port", "1"],
                          env=_env(GEOBASE_DATA_DIR=str(tmp_path), **{variable: value}), cwd=str(REPO),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == ConfigError.exit_code, proc.stderr
    assert f"{variable}:" in proc.stderr and says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "serving on" not in proc.stdout
    assert "secret" not in proc.stderr  # a database URL is never echoed (it may hold a password)


def test_every_cli_command_checks_the_settings_first(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "geobase.cli", "config"],
                          env=_env(GEOBASE_DATA_DIR=str(tmp_path), GEOBASE_JOBS_MAX_RUNNING="0"), cwd=str(REPO),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == ConfigError.exit_code and "GEOBASE_JOBS_MAX_RUNNING:" in proc.stderr, proc.stderr


@pytest.mark.parametrize(("variable", "value", "says"), BAD)
def test_a_bad_value_is_refused_when_the_settings_are_made(variable, value, says, monkeypatch) -> None:
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError) as exc:
            get_settings()
    finally:
        monkeypatch.delenv(variable)
        get_settings.cache_clear()
    assert exc.value.parameter == variable and says in exc.value.message


@pytest.mark.parametrize(("field", "value", "says"), [
    ("analysis_role", "Analyst", "GEOBASE_ANALYSIS_ROLE"),
    ("tile_concurrency", 0, "GEOBASE_TILE_CONCURRENCY"),
    ("default_limit", 20_000, "GEOBASE_DEFAULT_LIMIT (20000) exceeds GEOBASE_MAX_LIMIT"),
    ("pool_min_size", 50, "GEOBASE_POOL_MIN_SIZE (50) exceeds GEOBASE_POOL_MAX_SIZE"),
])
def test_the_app_factory_refuses_a_bad_value_given_in_code(field, value, says) -> None:
    """``model_copy(update=...)`` skips pydantic's checks; the app factory checks again."""
    from geobase.api.app import create_app

    bad = load_settings().model_copy(update={field: value})
    with pytest.raises(ConfigError) as exc:
        create_app(bad)
    assert says in exc.value.message
    with pytest.raises(ConfigError):
        check_settings(bad)


def test_the_defaults_and_the_documented_edge_values_are_accepted(tmp_path) -> None:
    s = load_settings(analysis_role="", rate_limit_per_s=0, tile_cache_max_bytes=0, statement_timeout_ms=0,
                      trusted_proxies="127.0.0.1, 10.0.0.0/8,::1", log_level="WARNING",
                      database_url="postgresql://u:p@127.0.0.1:5432/geo", public_url="https://onemap.example.gov.cn")
    assert s.log_level == "warning" and check_settings(s) is s
    for role in ("viewer", "analyst", "steward", "admin"):
        assert load_settings(analysis_role=role).analysis_role == role


def test_each_setting_belongs_to_one_concern_and_keeps_its_variable(monkeypatch) -> None:
    owners: dict[str, str] = {}
    for concern, cls in CONCERNS.items():
        for name in cls.model_fields:
            assert name not in owners, f"{name} in {owners.get(name)} and {concern}"
            owners[name] = concern
    assert set(owners) == set(Settings.model_fields)
    monkeypatch.setenv("GEOBASE_RATE_LIMIT_BURST", "7")
    monkeypatch.setenv("GEOBASE_ANALYSIS_ROLE", "analyst")
    s = load_settings()
    assert s.rate_limit_burst == 7 and s.concern("limits").rate_limit_burst == 7
    assert s.concern("analysis").analysis_role == "analyst"
