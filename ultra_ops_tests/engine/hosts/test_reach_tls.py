"""An https URL on a hosted environment's loopback, reached through a tunnel's local port, keeps
the name the config wrote for TLS: a real TLS server on this machine's loopback with a certificate
for `localhost` (the server a host runs on its own), reached at the URL reach.py rewrites to
127.0.0.1. No host needed: the rewrite is what a tunnel's opening does."""

from __future__ import annotations

import datetime
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ultra_ops.engine.hosts.reach import rewritten
from ultra_ops.engine.release.checklist.report import http_client
from ultra_ops.engine.settings import Environment, load_settings
from ultra_ops.engine.verify import runner
from ultra_ops.engine.verify.health import poll_health
from ultra_ops_tests.support.configs import hosted_config

pytestmark = pytest.mark.unit

CONFIGURED_PORT = 8443  # the port on the host's loopback the config names
SECTIONS = f"""[environments.staging.verify]
health_urls = ["https://localhost:{CONFIGURED_PORT}/health"]
endpoints = [{{ name = "version", url = "https://localhost:{CONFIGURED_PORT}/api/v1/version" }}]
retries = 0
timeout_s = 5
[environments.staging.checklist]
rate_limit_url = "https://localhost:{CONFIGURED_PORT}/api/v1/version"
"""


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (its own issuer, so a client can trust it alone) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@contextmanager
def _tls_server(cert: Path, key: Path) -> Iterator[tuple[int, list[tuple[str | None, str | None]]]]:
    """An HTTPS server on 127.0.0.1 answering 200 with a healthy JSON body: its port, and the
    (SNI name, Host header) of each request it answered."""
    seen: list[tuple[str | None, str | None]] = []
    sni: dict[int, str | None] = {}
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, _ctx: sni.__setitem__(id(sock), name)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append((sni.get(id(self.connection)), self.headers.get("Host")))
            body = json.dumps({"status": "ok", "version": "v1.0.0"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self):  # type: ignore[no-untyped-def]
            sock, address = super().get_request()
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

        def finish_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
            try:
                request.do_handshake()  # in the request's thread: a refused handshake ends only it
            except (ssl.SSLError, OSError):
                return
            super().finish_request(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """The certificate, trusted by every httpx client of this test (SSL_CERT_FILE); verify's
    process-wide TLS context is made again before and after, so it is this test's alone."""
    cert, key = _certificate(tmp_path, "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    runner._trusted_tls.cache_clear()
    yield cert, key
    runner._trusted_tls.cache_clear()


def _reached(tmp_path: Path, local_port: int) -> Environment:
    """The hosted environment as this machine reaches it once a tunnel to its port 8443 listens
    on `local_port`."""
    config = hosted_config(
        tmp_path,
        'address = "10.0.0.5"\nuser = "deploy"\n',
        database=("localhost", 5501),
        redis_url="redis://127.0.0.1:6501/2",
        sections=SECTIONS,
    )
    return rewritten(load_settings(config).environment("staging"), {CONFIGURED_PORT: local_port})


def test_an_https_url_through_a_tunnel_keeps_the_configured_name(tmp_path: Path, trusted: tuple[Path, Path]) -> None:
    with _tls_server(*trusted) as (port, seen):
        env = _reached(tmp_path, port)
        [url] = env.verify.health_urls
        assert url == f"https://127.0.0.1:{port}/health"
        assert env.reached_from == ((port, f"localhost:{CONFIGURED_PORT}"),)
        # A client that checks the certificate against the URL it is given refuses it: the
        # certificate names localhost, the URL 127.0.0.1.
        with pytest.raises(httpx.ConnectError, match="IP address mismatch"):
            httpx.get(url, timeout=5)
        assert seen == []

        # The health monitor, verify and the checklist ask as configured: TLS checks the name
        # localhost, and the server sees the request as made on its host.
        poll = poll_health(env, 5)
        assert poll.healthy, poll.states
        report = runner.verify_environment(env, performance=False)
        answered = {r.name: r.ok for r in report.results if r.kind in ("health", "endpoint")}
        assert answered == {f"health {url}": True, "endpoint version": True}, report.results
        with http_client(env) as client:
            assert client.get(env.checklist.rate_limit_url).status_code == 200
        assert seen == [("localhost", f"localhost:{CONFIGURED_PORT}")] * 4


def test_a_certificate_for_another_name_is_still_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The configured name is checked, not skipped: a certificate for another name fails as it
    would on the host."""
    cert, key = _certificate(tmp_path, "other.example")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with _tls_server(cert, key) as (port, seen):
        poll = poll_health(_reached(tmp_path, port), 5)
        assert not poll.healthy and seen == [], poll.states
        with http_client(_reached(tmp_path, port)) as client, pytest.raises(httpx.ConnectError, match="mismatch"):
            client.get(f"https://127.0.0.1:{port}/api/v1/version")
