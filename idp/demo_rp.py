"""A small relying party for the demo: a real OpenID Connect client (Authlib)."""

from __future__ import annotations

import argparse
import html
import json
import os
import secrets

from authlib.integrations.flask_client import OAuth
from flask import Flask, redirect, session, url_for

PAGE = """<!doctype html><html lang="fr"><head><meta charset="utf-8">
<title>Application de démonstration</title>
<style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:3rem auto;color:#1b2733}}
a.button{{display:inline-block;padding:.7rem 1.3rem;background:#005a9c;color:#fff;
border-radius:.3rem;text-decoration:none}} pre{{background:#f4f7fa;padding:1rem;overflow:auto}}
</style></head><body><h1>Portail de démonstration</h1>{body}</body></html>"""


def pretty(data: dict) -> str:
    return html.escape(json.dumps(data, ensure_ascii=False, indent=2))


def create_rp_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_hex(32),
        SESSION_COOKIE_NAME="demo_rp_session",
        SESSION_COOKIE_SAMESITE="Lax",
    )
    issuer = os.environ.get("IDP_ISSUER", "http://localhost:5000").rstrip("/")
    oauth = OAuth(app)
    oauth.register(
        "idp",
        client_id=os.environ["DEMO_RP_CLIENT_ID"],
        client_secret=os.environ["DEMO_RP_CLIENT_SECRET"],
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile email rpps", "code_challenge_method": "S256"},
    )
    rp_url = os.environ.get("DEMO_RP_URL", "http://localhost:5001").rstrip("/")

    @app.get("/")
    def index():
        user = session.get("claims")
        if not user:
            body = '<p><a class="button" href="/login">Se connecter</a></p>'
        else:
            shown = {k: user.get(k) for k in ("name", "rpps", "profession", "acr", "amr")}
            body = (
                f"<p>Bonjour {html.escape(str(user.get('name', '')))}.</p>"
                f"<pre>{pretty(shown)}</pre><h2>ID token</h2><pre>{pretty(user)}</pre>"
                '<p><a href="/logout">Se déconnecter de l\'application</a></p>'
            )
        return PAGE.format(body=body)

    @app.get("/login")
    def login():
        return oauth.idp.authorize_redirect(f"{rp_url}/callback")

    @app.get("/callback")
    def callback():
        token = oauth.idp.authorize_access_token()
        session["claims"] = dict(token["userinfo"])
        return redirect(url_for("index"))

    @app.get("/logout")
    def logout():
        session.clear()
        return redirect(url_for("index"))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    from idp.wsgi_server import run

    run(host="127.0.0.1", port=args.port, workers=1, factory=create_rp_app)


if __name__ == "__main__":
    main()
