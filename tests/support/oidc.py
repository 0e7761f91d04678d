"""A scripted user agent (requests) and a real OIDC client (Authlib) for journeys."""

from __future__ import annotations

import re
import secrets
from urllib.parse import parse_qs, urljoin, urlsplit

import pyotp
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet

CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in page"
    return match.group(1)


class UserAgent:
    """Follows redirects inside the IdP, stops at the client's redirect URI."""

    def __init__(
        self,
        base_url: str,
        client_redirect_prefix: str = "http://localhost:9999",
        *,
        language: str | None = None,
    ) -> None:
        self.base = base_url
        self.http = requests.Session()
        if language is not None:  # the pages' language (the IdP's default is French)
            self.http.headers["Accept-Language"] = language
        self.stop_prefix = client_redirect_prefix
        self.last = None

    def get(self, url: str, **kwargs) -> requests.Response:
        return self._follow(self.http.get(self._abs(url), allow_redirects=False, **kwargs))

    def post(self, url: str, data: dict, with_csrf_from: str | None = None, **kwargs):
        if with_csrf_from is not None:
            data = {"csrf_token": csrf_token(with_csrf_from), **data}
        response = self.http.post(self._abs(url), data=data, allow_redirects=False, **kwargs)
        return self._follow(response)

    def _abs(self, url: str) -> str:
        return url if url.startswith("http") else self.base + url

    def _follow(self, response: requests.Response) -> requests.Response:
        for _ in range(10):
            location = response.headers.get("Location")
            if response.status_code not in (301, 302, 303, 307) or not location:
                break
            if location.startswith(self.stop_prefix):
                break
            response = self.http.get(urljoin(response.url, location), allow_redirects=False)
        self.last = response
        return response

    def login_password(self, identifier: str, password: str) -> requests.Response:
        page = self.get("/login")
        return self.post("/login", {"identifier": identifier, "password": password}, page.text)

    def submit_totp(self, code: str, page: requests.Response | None = None):
        page = page if page is not None else self.get("/login/totp")
        return self.post("/login/totp", {"code": code}, page.text)


def json_post(agent: UserAgent, path: str, page_html: str, data: dict | None = None):
    """What static/js/webauthn.js does: form fields, X-CSRFToken header, JSON wanted."""
    token = csrf_token(page_html)
    return agent.http.post(
        agent.base + path,
        data={"csrf_token": token, **(data or {})},
        headers={"X-CSRFToken": token, "Accept": "application/json"},
        allow_redirects=False,
    )


def totp_now(secret: str, clock) -> str:
    return pyotp.TOTP(secret).at(clock.now())


class RelyingParty:
    """Authlib's OAuth2Session configured from discovery, with PKCE S256 and a nonce."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        redirect_uri: str,
        auth_method: str = "client_secret_basic",
        scope: str = "openid profile email rpps",
    ):
        self.issuer = issuer
        self.metadata = requests.get(f"{issuer}/.well-known/openid-configuration").json()
        self.session = OAuth2Session(
            client_id,
            client_secret,
            scope=scope,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=auth_method,
        )
        self.code_verifier = secrets.token_urlsafe(48)
        self.nonce = secrets.token_urlsafe(16)
        self.state = None

    def authorization_url(self, **extra) -> str:
        url, self.state = self.session.create_authorization_url(
            self.metadata["authorization_endpoint"],
            code_verifier=self.code_verifier,
            nonce=self.nonce,
            **extra,
        )
        return url

    def exchange(self, callback_url: str) -> dict:
        return self.session.fetch_token(
            self.metadata["token_endpoint"],
            authorization_response=callback_url,
            code_verifier=self.code_verifier,
        )

    def verify_id_token(self, id_token: str, client_id: str, clock=None) -> dict:
        """Check signature (JWKS) and claims; ``clock`` when the test moved time."""
        jwks = KeySet.import_key_set(requests.get(self.metadata["jwks_uri"]).json())
        header_alg = jwt.decode(id_token, jwks, algorithms=["RS256", "PS256", "ES256"])
        claims = header_alg.claims
        registry = jwt.JWTClaimsRegistry(
            now=int(clock.now().timestamp()) if clock else None,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": client_id},
            nonce={"essential": True, "value": self.nonce},
            exp={"essential": True},
            iat={"essential": True},
        )
        registry.validate(claims)
        return {"header": header_alg.header, "claims": claims}


def redeem_code(
    token_endpoint: str, code: str, *, redirect_uri: str, verifier: str | None, auth
) -> requests.Response:
    """A raw token request for ``code`` (``verifier`` None sends no code_verifier)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        data["code_verifier"] = verifier
    return requests.post(token_endpoint, data=data, auth=auth, timeout=60)


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)
