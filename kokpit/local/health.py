"""Health probes for the local control-plane components."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from functools import cache

from kokpit.local.components import Health, Layout
from kokpit.pki import ADMIN


def healthy(health: Health, layout: Layout) -> bool:
    """True when the component answers its health URL with 200 ``ok``."""
    try:
        with urllib.request.urlopen(
            health.url, timeout=health.timeout_s, context=_context(health.tls, layout)
        ) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _context(tls: str, layout: Layout) -> ssl.SSLContext | None:
    if tls == "none":
        return None
    if tls == "self-signed":
        return _self_signed()
    # Keyed by the certificate's modification time, so a renewed one is used at once.
    cert = layout.pki.client_cert(ADMIN)
    return _client_cert(layout, cert.stat().st_mtime_ns if cert.exists() else 0)


@cache
def _self_signed() -> ssl.SSLContext:
    # Probed on 127.0.0.1 only, against a certificate the component made for itself at start.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@cache
def _client_cert(layout: Layout, written: int) -> ssl.SSLContext:
    pki = layout.pki
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.client_cert(ADMIN)), str(pki.client_key(ADMIN)))
    return ctx
