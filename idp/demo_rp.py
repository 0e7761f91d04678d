"""A small relying party for the demo: a real OpenID Connect client (Authlib).

It shows what a health application sees after a login through the IdP: the ID token's claims,
the assurance level reached (``acr``) and the methods used (``amr``). It can ask for a
phishing-resistant login (``acr_values=phr``) or for the health professional card
(``acr_values=phrh``), and an error sent back by the IdP is shown as a page, not a crash.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets

from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, redirect, render_template_string, request, session, url_for

#: What ``/login?acr_values=…`` may ask for: none (the IdP's default), phishing resistant,
#: phishing resistant on hardware (the CPS card).
ACR_CHOICES = ("", "phr", "phrh")

ACR_LABELS = {
    "substantial": "substantiel (mot de passe et second facteur)",
    "phr": "résistant à l'hameçonnage",
    "phrh": "résistant à l'hameçonnage, sur matériel (carte CPS ou clé attestée)",
}

AMR_LABELS = {
    "pwd": "mot de passe",
    "otp": "code à usage unique (TOTP)",
    "mfa": "plusieurs facteurs",
    "hwk": "clé matérielle",
    "swk": "clé logicielle",
    "pop": "preuve de possession d'une clé",
    "sc": "carte à puce",
    "pin": "code PIN",
    "user": "présence de l'utilisateur vérifiée",
    "face": "reconnaissance faciale",
    "fpt": "empreinte digitale",
}

#: The IdP's error codes (RFC 6749 §4.1.2.1, OpenID Connect Core §3.1.2.6), in plain French.
ERROR_MESSAGES = {
    "access_denied": "L'accès a été refusé : l'autorisation n'a pas été donnée à l'application.",
    "login_required": "Une connexion est nécessaire, mais elle n'a pas pu se faire sans vous.",
    "interaction_required": "Le fournisseur d'identité a besoin que vous interveniez.",
    "consent_required": "Votre accord est nécessaire pour partager votre identité.",
    "unmet_authentication_requirements": (
        "Le niveau de sécurité demandé n'a pas pu être atteint avec les moyens de connexion "
        "disponibles."
    ),
    "temporarily_unavailable": "Le fournisseur d'identité est momentanément indisponible.",
    "server_error": "Le fournisseur d'identité a rencontré une erreur.",
    "invalid_request": "La demande de connexion n'était pas valable.",
    "invalid_scope": "L'application a demandé des informations qu'elle ne peut pas obtenir.",
    "unauthorized_client": "Cette application n'est pas autorisée à demander cette connexion.",
    "mismatching_state": (
        "La réponse ne correspond à aucune connexion en cours (session expirée ou "
        "connexion lancée dans un autre onglet)."
    ),
}
UNKNOWN_ERROR = "La connexion n'a pas abouti."

PAGE = """<!doctype html>
<html lang="fr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · Appli de démonstration</title>
<style>
body{font-family:system-ui,sans-serif;max-width:46rem;margin:0 auto;padding:1.5rem;
color:#1b2733;line-height:1.5}
header{border-bottom:1px solid #d5dde5;margin-bottom:1.5rem}
header p{margin:.2rem 0 1rem;color:#4a5968}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;margin:1.5rem 0;padding:0}
.actions li{list-style:none}
.button,button{display:inline-block;padding:.7rem 1.2rem;background:#005a9c;color:#fff;
border:0;border-radius:.3rem;text-decoration:none;font:inherit;cursor:pointer}
.button.secondary,button.secondary{background:#fff;color:#005a9c;box-shadow:inset 0 0 0 2px #005a9c}
.button:focus-visible,button:focus-visible{outline:3px solid #f0a500;outline-offset:2px}
.error{border-left:.4rem solid #b3261e;background:#fdf1f0;padding:1rem 1.2rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1.2rem}
dt{font-weight:600} dd{margin:0} code{font-size:.95em}
pre{background:#f4f7fa;padding:1rem;overflow:auto}
</style>
</head>
<body>
<header>
<h1>Appli de démonstration</h1>
<p>Une application de santé qui délègue la connexion au fournisseur d'identité.</p>
</header>
<main>
{% if error %}
<section class="error" role="alert" aria-labelledby="error-title">
<h2 id="error-title">La connexion n'a pas abouti</h2>
<p>{{ error.message }}</p>
{% if error.description %}<p>Détail donné par le fournisseur d'identité :
« {{ error.description }} »</p>{% endif %}
<p>Code d'erreur : <code>{{ error.code }}</code></p>
</section>
<ul class="actions">
<li><a class="button" href="{{ url_for('login', acr_values=error.acr) if error.acr
  else url_for('login') }}">Réessayer</a></li>
<li><a class="button secondary" href="{{ url_for('index') }}">Retour à l'accueil</a></li>
</ul>
{% elif claims %}
<h2>Bonjour {{ claims.get('name') or claims.get('sub') }}</h2>
<p>Vous êtes connecté. Voici ce que l'application a reçu dans le jeton d'identité.</p>
<dl>
<dt>Nom</dt><dd>{{ claims.get('name') or '—' }}</dd>
<dt>RPPS</dt><dd>{{ claims.get('rpps') or '—' }}</dd>
{% if claims.get('profession') %}<dt>Profession</dt><dd>{{ claims.get('profession') }}</dd>
{% endif %}
<dt>Niveau (acr)</dt><dd><code>{{ claims.get('acr') or '—' }}</code>{% if acr_label %}
: {{ acr_label }}{% endif %}</dd>
<dt>Méthodes (amr)</dt><dd>{% for code, label in amr %}<code>{{ code }}</code>{% if label %}
({{ label }}){% endif %}{% if not loop.last %}, {% endif %}{% else %}—{% endfor %}</dd>
<dt>Authentifié le</dt><dd>{{ auth_time or '—' }}</dd>
</dl>
<ul class="actions">
<li><a class="button" href="{{ url_for('login', acr_values='phr') }}">Se reconnecter avec une
méthode résistante à l'hameçonnage</a></li>
<li><a class="button" href="{{ url_for('login', acr_values='phrh') }}">Se reconnecter avec la
carte CPS</a></li>
<li><a class="button secondary" href="{{ account_url }}">Mon compte</a></li>
<li><form method="post" action="{{ url_for('logout') }}">
<button type="submit" class="secondary">Se déconnecter</button></form></li>
</ul>
<details><summary>Toutes les revendications du jeton d'identité</summary>
<pre>{{ claims_json }}</pre></details>
{% else %}
<h2>Connexion</h2>
<p>Choisissez comment vous connecter. Le fournisseur d'identité vous demandera ce qu'il faut
pour atteindre le niveau choisi.</p>
<ul class="actions">
<li><a class="button" href="{{ url_for('login') }}">Se connecter</a></li>
<li><a class="button" href="{{ url_for('login', acr_values='phr') }}">Se connecter avec une
méthode résistante à l'hameçonnage</a></li>
<li><a class="button" href="{{ url_for('login', acr_values='phrh') }}">Se connecter avec la
carte CPS</a></li>
</ul>
<p><a href="{{ account_url }}">Mon compte</a> sur le fournisseur d'identité : vos moyens de
connexion, vos appareils.</p>
{% endif %}
</main>
</body>
</html>"""


def readable_time(timestamp: object) -> str | None:
    """``auth_time`` (seconds since the epoch) as a French date, in Paris time."""
    if not isinstance(timestamp, int | float):
        return None
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    try:
        from zoneinfo import ZoneInfo

        moment, zone = moment.astimezone(ZoneInfo("Europe/Paris")), "heure de Paris"
    except Exception:  # noqa: BLE001  (no time zone database: stay in UTC)
        zone = "UTC"
    return f"{moment:%d/%m/%Y à %H:%M:%S} ({zone})"


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
    account_url = f"{issuer}/account"

    def page(title: str, status: int = 200, **context):
        html = render_template_string(PAGE, title=title, account_url=account_url, **context)
        return html, status, {"Content-Type": "text/html; charset=utf-8"}

    def error_page(code: str, description: str | None = None):
        error = {
            "code": code,
            "message": ERROR_MESSAGES.get(code, UNKNOWN_ERROR),
            "description": description if description and description != code else None,
            "acr": session.pop("acr_values", None),
        }
        return page("Connexion interrompue", error=error)

    @app.get("/")
    def index():
        claims = session.get("claims")
        if not claims:
            return page("Accueil")
        amr = claims.get("amr") or []
        return page(
            "Connecté",
            claims=claims,
            acr_label=ACR_LABELS.get(claims.get("acr")),
            amr=[(code, AMR_LABELS.get(code)) for code in amr],
            auth_time=readable_time(claims.get("auth_time")),
            claims_json=json.dumps(claims, ensure_ascii=False, indent=2),
        )

    @app.get("/login")
    def login():
        acr = request.args.get("acr_values", "")
        if acr not in ACR_CHOICES:
            return error_page("invalid_request", "acr_values inconnu")
        session["acr_values"] = acr
        extra = {"acr_values": acr} if acr else {}
        return oauth.idp.authorize_redirect(f"{rp_url}/callback", **extra)

    @app.get("/callback")
    def callback():
        if request.args.get("error"):
            state = request.args.get("state")
            if state:  # this login is over: forget its state, nonce and PKCE verifier
                oauth.idp.framework.clear_state_data(session, state)
            return error_page(
                request.args["error"][:64], request.args.get("error_description", "")[:300]
            )
        try:
            token = oauth.idp.authorize_access_token()
        except OAuthError as exc:
            return error_page(exc.error or "server_error", exc.description)
        except OSError:  # the IdP's token endpoint did not answer
            return error_page("temporarily_unavailable")
        session.pop("acr_values", None)
        session["claims"] = dict(token["userinfo"])
        return redirect(url_for("index"))

    @app.post("/logout")
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
