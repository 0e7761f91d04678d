"""A CRL distribution point on 127.0.0.1: serves whatever a test puts at a path."""

from __future__ import annotations

import collections
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


class CrlServer:
    """Serves whatever bytes a test puts at a path; counts requests; can fail on demand."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.failures: dict[str, int] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.hits[self.path] += 1
                status = server.failures.get(self.path)
                body = server.routes.get(self.path)
                if status is None and body is None:
                    status = 404
                if status is not None:
                    self.send_error(status)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.url_template = f"http://127.0.0.1:{self.port}/crl/{{name}}.crl"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self.routes.clear()
        self.failures.clear()
        self.hits.clear()

    def serve(self, url: str, crl: x509.CertificateRevocationList | bytes) -> None:
        body = crl if isinstance(crl, bytes) else crl.public_bytes(Encoding.DER)
        self.routes[self.path(url)] = body
        self.failures.pop(self.path(url), None)

    def fail(self, url: str, status: int = 503) -> None:
        self.failures[self.path(url)] = status

    def hits_for(self, url: str) -> int:
        return self.hits[self.path(url)]

    @staticmethod
    def path(url: str) -> str:
        return urllib.parse.urlsplit(url).path

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
