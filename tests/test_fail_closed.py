"""Issue 14, "security fails open": the app factory installs key checking, the request gate and
the audit writer itself, and refuses to build or start an app without any one of them;
``get_principal`` refuses (500) instead of treating the caller as public when key checking is
absent. On the old main these components came from ``api/admin.py``'s import-time ``setup``:
drop that router and every caller was public, with no limits and no audit, and no error."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from geobase import keys
from geobase.api import app as app_module
from geobase.api.app import ROUTER_MODULES, create_app, require_security
from geobase.api.gate import GateMiddleware
from geobase.audit_writer import AuditWriter
from geobase.api.gate import get_principal
from geobase.security import Principal

INSTALLERS = {
    "install_key_checking": "key checking",
    "install_audit_writer": "audit writer",
    "install_gate": "request gate",
}


def _not_installed(app: FastAPI) -> None:
    """An installer that installs nothing (as if its call had been dropped from the factory)."""


@pytest.mark.parametrize("installer", sorted(INSTALLERS))
def test_app_refuses_to_build_without_a_security_component(db_settings, monkeypatch, installer):
    monkeypatch.setattr(app_module, installer, _not_installed)
    with pytest.raises(RuntimeError, match=INSTALLERS[installer]):
        create_app(db_settings)


def _remove(app: FastAPI, component: str) -> None:
    if component == "key checking":
        del app.state.principal_resolver
    elif component == "audit writer":
        del app.state.audit_writer
    else:
        app.user_middleware[:] = [m for m in app.user_middleware if m.cls is not GateMiddleware]


@pytest.mark.parametrize("component", sorted(INSTALLERS.values()))
def test_app_refuses_to_start_when_a_component_is_removed_after_build(db_settings, component):
    """Removed after create_app (e.g. by a later wiring change): the lifespan refuses to start,
    before the pool opens, so no request is ever served without the component."""
    app = create_app(db_settings)
    _remove(app, component)

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pytest.fail("the app started without " + component)

    with pytest.raises(RuntimeError, match=component):
        asyncio.run(start())
    with pytest.raises(RuntimeError, match=component):
        with TestClient(app):
            pass


def test_normal_app_has_all_three(db_settings):
    app = create_app(db_settings)
    require_security(app)  # does not raise
    assert isinstance(app.state.principal_resolver, keys.KeyResolver)
    assert isinstance(app.state.audit_writer, AuditWriter)
    gates = [m for m in app.user_middleware if m.cls is GateMiddleware]
    assert len(gates) == 1
    assert gates[0].kwargs["resolver"] is app.state.principal_resolver
    assert gates[0].kwargs["audit_writer"] is app.state.audit_writer
    # the routers are listed explicitly, admin among them but no longer the one installing security
    assert "geobase.api.admin" in {m.__name__ for m in ROUTER_MODULES}
    assert not hasattr(ROUTER_MODULES[[m.__name__ for m in ROUTER_MODULES].index("geobase.api.admin")], "setup")
    # and they work: a malformed key is refused by the gate (401), an admin route without a key too
    with TestClient(app) as client:
        r = client.get("/collections", headers={"Authorization": "Bearer not-a-key"})
        assert r.status_code == 401, r.text
        r = client.get("/admin/audit/stats")
        assert r.status_code in (401, 403), r.text
        assert client.get("/collections").status_code == 200


def test_get_principal_refuses_without_key_checking():
    """Without a principal resolver the caller is not taken for the public: 500, not 200."""
    app = FastAPI()

    @app.get("/who")
    async def who(principal: Principal = Depends(get_principal)):
        return {"name": principal.name}

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/who")
    assert r.status_code == 500
    with TestClient(app) as client, pytest.raises(RuntimeError, match="key checking is not installed"):
        client.get("/who")
