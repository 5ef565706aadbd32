"""HTTP requests through a tunnel keep the name the config wrote.

reach.py moves a hosted environment's loopback URLs to this machine's end of a tunnel:
`https://localhost:8443/health` becomes `https://127.0.0.1:41234/health`. The certificate the
host's server presents names `localhost`, not `127.0.0.1`, so a client that checks it against the
URL it was given refuses it. httpx takes the name to check per request (the `sni_hostname`
extension: httpcore hands it to the TLS handshake as `server_hostname`, which is both the SNI the
server sees and the name Python's ssl module verifies the certificate against; the Host header
plays no part in that check). The Host header is set to the configured address as well, so the
server routes the request as it would one made on the host (a server that picks its virtual host
by SNI may answer 421 when the Host header names another).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING

from ultra_ops.engine.settings import Environment

if TYPE_CHECKING:
    import httpx

LOCAL = "127.0.0.1"  # where this machine's end of every tunnel listens (reach.py)


def as_configured(env: Environment) -> dict[str, list[Callable[[httpx.Request], None]]]:
    """`event_hooks` for an httpx.Client that requests `env`'s URLs: a request to a tunnel's local
    port names the host and port the config wrote, for TLS and in its Host header. Empty for an
    environment reached as configured (no host, or no loopback URL)."""
    configured = dict(env.reached_from)
    if not configured:
        return {}

    def keep_name(request: httpx.Request) -> None:
        if request.url.host != LOCAL or request.url.port not in configured:
            return
        netloc = configured[request.url.port]
        request.headers["Host"] = netloc
        name = urllib.parse.urlsplit(f"//{netloc}").hostname
        if request.url.scheme == "https" and name:
            request.extensions = {**request.extensions, "sni_hostname": name}

    return {"request": [keep_name]}
