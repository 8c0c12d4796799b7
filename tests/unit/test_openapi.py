"""The native OpenAPI document is valid OpenAPI 3 and covers every native route the server serves."""

from __future__ import annotations

from openapi_spec_validator import validate

from mediasrv.api.auth import is_dialect_path
from mediasrv.api.openapi import OPENAPI
from mediasrv.config import Settings
from mediasrv.server import Server


def test_openapi_is_valid_and_complete(tmp_path):
    server = Server(Settings(data_dir=str(tmp_path)))
    validate(OPENAPI)
    served = set()
    for route in server.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method in ("HEAD", "*") or is_dialect_path(path) or path.startswith("/calling/"):
            continue
        served.add((route.method.lower(), path))
    documented = {(m, p) for p, ops in OPENAPI["paths"].items() for m in ops if m in ("get", "post", "put", "delete")}
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
    assert {"telnyx", "plivo", "acs", "bandwidth"} <= set(OPENAPI["x-dialects"])
