"""A real nginx in front of a test backend: TLS termination and client-certificate forwarding.

Everything lives under a temporary prefix (pid, logs, temp paths), nginx stays in the foreground
(``daemon off``) as a child of the test process and listens on free 127.0.0.1 ports. Two sites:
``card_site`` (one server, like the brief's single-host setup) and ``render_deploy_site``, the
shipped ``deploy/nginx/idp-client-cert.conf`` with only paths, ports and the backend swapped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from tests.support import pki

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
DEPLOY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "idp-client-cert.conf"
CARD_PATH = "/login/card/tls"
CERT_HEADER = "X-SSL-Client-Cert"
VERIFY_HEADER = "X-SSL-Client-Verify"
START_TIMEOUT_SECONDS = 10
ENGINE_PATHS = (
    "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so",
    "/usr/lib/engines-3/pkcs11.so",
)


class NginxUnavailableError(RuntimeError):
    """nginx is not installed (Debian: apt-get install -y nginx)."""


class NginxStartError(RuntimeError):
    """nginx refused the configuration or did not start listening."""


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((path for path in NGINX_CANDIDATES if os.access(path, os.X_OK)), None)


def nginx_or_skip() -> str:
    """The nginx binary; in CI a missing nginx fails instead of skipping."""
    binary = find_nginx()
    if binary is None:
        reason = "nginx not found (apt-get install -y nginx)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: refusing to skip)", pytrace=False)
        pytest.skip(reason)
    return binary


def pkcs11_engine_or_skip() -> str:
    """OpenSSL's pkcs11 engine (libp11) and curl, to present a token's key in a TLS handshake."""
    engine = next((path for path in ENGINE_PATHS if os.path.exists(path)), None)
    if engine is None or shutil.which("curl") is None:
        reason = "curl and the OpenSSL pkcs11 engine (apt-get install -y libengine-pkcs11-openssl)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: refusing to skip)", pytrace=False)
        pytest.skip(reason)
    return engine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ServerTls:
    """The proxy's TLS identity and the CA file clients verify it with."""

    certificate_file: Path
    key_file: Path
    ca_file: Path


def write_server_tls(directory: Path, *, hostnames: tuple[str, ...] = ("localhost",)) -> ServerTls:
    """A throwaway TLS CA and a server certificate for ``hostnames`` and 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = pki.make_root(level="SERVEURS TLS", test=True)
    certificate, key = pki.issue_server_certificate(issuer=ca, hostnames=hostnames)
    tls = ServerTls(
        certificate_file=directory / "tls.crt",
        key_file=directory / "tls.key",
        ca_file=directory / "server-ca.pem",
    )
    tls.certificate_file.write_bytes(certificate.public_bytes(Encoding.PEM))
    tls.key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    tls.key_file.chmod(0o600)
    tls.ca_file.write_bytes(ca.certificate.public_bytes(Encoding.PEM))
    return tls


def card_site(
    *,
    port: int,
    backend: str,
    tls: ServerTls,
    client_ca_file: Path | None = None,
) -> str:
    """One server: the card path forwards the certificate, every other path clears it.

    Without ``client_ca_file``: ``optional_no_ca`` (nginx forwards any certificate). With it:
    ``optional`` and nginx verifies the chain first (``$ssl_client_verify`` = SUCCESS).
    """
    if client_ca_file is None:
        verify = "ssl_verify_client optional_no_ca;"
    else:
        verify = (
            "ssl_verify_client optional;\n"
            f"        ssl_client_certificate {client_ca_file};\n"
            "        ssl_verify_depth 3;"
        )
    common = (
        "proxy_pass http://idp_backend;\n"
        "            proxy_set_header Host $host;\n"
        "            proxy_set_header X-Forwarded-For $remote_addr;\n"
        "            proxy_set_header X-Forwarded-Proto $scheme;"
    )
    return f"""
    upstream idp_backend {{
        server {backend};
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {tls.certificate_file};
        ssl_certificate_key {tls.key_file};
        ssl_protocols TLSv1.2 TLSv1.3;
        {verify}
        location = {CARD_PATH} {{
            {common}
            proxy_set_header {CERT_HEADER} $ssl_client_escaped_cert;
            proxy_set_header {VERIFY_HEADER} $ssl_client_verify;
        }}
        location / {{
            {common}
            proxy_set_header {CERT_HEADER} "";
            proxy_set_header {VERIFY_HEADER} "";
        }}
    }}
"""


def render_deploy_site(
    *,
    https_port: int,
    http_port: int,
    backend: str,
    files_directory: Path,
    text: str | None = None,
) -> str:
    """The shipped configuration, pointed at test paths, ports and backend (IPv4 only)."""
    text = DEPLOY_CONF.read_text() if text is None else text
    replacements = {
        "/etc/nginx/idp/": f"{files_directory}/",
        "server 127.0.0.1:8000;": f"server {backend};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
    }
    for old, new in replacements.items():
        if old not in text:
            raise NginxStartError(f"deploy config no longer contains {old!r}: update the harness")
        text = text.replace(old, new)
    return "\n".join(line for line in text.splitlines() if "listen [::]" not in line)


@dataclass
class Nginx:
    """A running nginx; ``stop`` ends it (only this process, by its own handle)."""

    prefix: Path
    process: subprocess.Popen
    ports: tuple[int, ...]
    _stopped: bool = field(default=False, repr=False)

    @property
    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def main_config(*, prefix: Path, site: str) -> str:
    """Own pid, logs and temp paths; ``user root`` when root so workers can read the prefix."""
    user = "user root;" if os.geteuid() == 0 else ""
    temp = prefix / "temp"
    return f"""
{user}
worker_processes 1;
daemon off;
pid {prefix}/logs/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{
    worker_connections 64;
}}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{site}
}}
"""


def _prepare(prefix: Path, site: str) -> tuple[str, Path]:
    binary = find_nginx()
    if binary is None:
        raise NginxUnavailableError("nginx not found (apt-get install -y nginx)")
    for sub in ("logs", "temp", "conf"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "conf" / "nginx.conf"
    conf.write_text(main_config(prefix=prefix, site=site))
    return binary, conf


def check_config(*, prefix: Path, site: str) -> None:
    """``nginx -t``: the configuration parses and its files load."""
    binary, conf = _prepare(prefix, site)
    result = subprocess.run(
        [binary, "-t", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs/error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        raise NginxStartError(result.stderr)


def start_nginx(*, prefix: Path, site: str, ports: tuple[int, ...]) -> Nginx:
    """Start in the foreground and wait until every port accepts connections."""
    binary, conf = _prepare(prefix, site)
    error_log = prefix / "logs" / "error.log"
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(conf), "-e", str(error_log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    nginx = Nginx(prefix=prefix, process=process, ports=ports)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    waiting = list(ports)
    while waiting:
        if process.poll() is not None:
            raise NginxStartError(f"nginx exited ({process.returncode}):\n{nginx.error_log}")
        if time.monotonic() > deadline:
            nginx.stop()
            raise NginxStartError(f"nginx did not listen on {waiting}:\n{nginx.error_log}")
        try:
            socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2).close()
            waiting.pop(0)
        except OSError:
            time.sleep(0.05)
    return nginx


@dataclass(frozen=True)
class TokenClientKey:
    """What curl needs to sign the TLS handshake with a key that stays on a PKCS#11 token."""

    env: dict
    certificate: Path
    key_uri: str


def token_client_key(directory: Path, *, engine: str, module_path: str, card) -> TokenClientKey:
    """OpenSSL configuration loading libp11's engine for ``card`` (a provisioned token)."""
    openssl_conf = directory / "openssl.cnf"
    openssl_conf.write_text(
        "openssl_conf = openssl_init\n"
        "[openssl_init]\nengines = engine_section\n"
        "[engine_section]\npkcs11 = pkcs11_section\n"
        "[pkcs11_section]\n"
        "engine_id = pkcs11\n"
        f"dynamic_path = {engine}\n"
        f"MODULE_PATH = {module_path}\n"
        "init = 0\n"
    )
    certificate = directory / "token.crt"
    certificate.write_bytes(card.auth.certificate.public_bytes(Encoding.PEM))
    label = urllib.parse.quote(card.label)
    return TokenClientKey(
        env=os.environ | {"OPENSSL_CONF": str(openssl_conf)},
        certificate=certificate,
        key_uri=f"pkcs11:token={label};id=%01;type=private?pin-value={card.pin}",
    )
