"""Wires the ACS dialect: its core (acs.py) and its DTMF extension (acs_dtmf.py).

A module of its own so that neither imports the other's wiring: acs_dtmf.py builds on acs.py,
and acs.py knows nothing of acs_dtmf.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from . import acs_dtmf
from .acs import ACS_KEY, JWKS_PATH, OPENAPI_DIALECT, OPENID_PATH, AcsDialect, AcsError, acs_error, log
from .dialect import Dialect, error_shape, mount
from .signing import RsaJwtSigner

if TYPE_CHECKING:
    from ..nodeview import Node


def setup(app: web.Application, server: Node) -> None:
    """Serve ``/calling/...`` (everything under it, so unknown paths get ACS's 401/404 too)."""
    settings = server.settings
    # the RSA key is made only for an enabled dialect: a disabled one never touches the data dir
    signer = RsaJwtSigner.load_or_create(settings.data_dir) if settings.acs_access_key else None
    dialect = AcsDialect(server, signer)
    app[ACS_KEY] = dialect
    if not dialect.key:
        log.info("ACS dialect disabled: set MEDIASRV_ACS_ACCESS_KEY to enable it")
    else:
        log.info("ACS dialect on /calling; callbacks signed RS256 (kid %s, aud %s)",
                 signer.kid if signer else "?", dialect.audience)
    # its webhook sink is made (and added to the bus) by AcsDialect itself: it sends, it does not render
    unit = Dialect("acs", "/calling/", [error_shape(AcsError, acs_error), dialect.auth],
                   on_event=[dialect.on_event], openapi=OPENAPI_DIALECT)
    # DTMF operations (continuous recognition, recognize, send): their own module
    acs_dtmf.setup(unit, dialect)
    OPENAPI_DIALECT["routes"] += [r for r in acs_dtmf.OPENAPI_ROUTES if r not in OPENAPI_DIALECT["routes"]]
    unit.add_routes([
        web.get(OPENID_PATH, dialect.openid_configuration),
        web.get(JWKS_PATH, dialect.jwks),
        web.route("*", "/calling/{tail:.*}", dialect.handle),
    ])
    mount(app, server, unit)
