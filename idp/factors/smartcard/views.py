"""CPS card pages: the login page (local bridge and code), the agent's terminal-mode API, the TLS
client-certificate endpoints, and card removal from the account.

Thin: every answer goes through the orchestrator (``orchestrator().authenticate`` for the card's
answer, ``orchestrator().pick_up`` for the browser taking over a login completed by the agent or
the card host, ``orchestrator().remove`` for a card), which runs ``SmartcardMethod``; these views
turn its typed errors into pages or JSON. The login transaction's id lives in the login state
(the card's step state): status, completion and the TLS return read it from there, never from
the request.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _

from idp import headers, jsonlimits
from idp.auth import flow
from idp.auth.contract import (
    AccountUnavailableError,
    Attempt,
    LastFactorError,
    MethodError,
    NoSuchEnrolmentError,
)
from idp.auth.devices import Client
from idp.auth.error_pages import render_error
from idp.auth.errors import when_throttled
from idp.auth.forms import EmptyForm
from idp.auth.orchestrator import orchestrator
from idp.auth.policy import Policy, current_auth, policy
from idp.auth.views import (
    after_login,
    client_ip,
    complete_login,
    first_factor_practitioner,
    login_context,
    offered_factors,
)
from idp.db import get_db
from idp.factors.smartcard import login as service
from idp.factors.smartcard.forms import CardAnswerForm
from idp.factors.smartcard.method import FAILURES, GENERIC_FAILURE
from idp.factors.smartcard.trust import CardTrust, CrlCache, DatabaseCrlStore, RedisCrlStore
from idp.services import clock, methods, settings, throttle
from smartcard.protocol import MAX_MESSAGE_BYTES, origin_of

bp = Blueprint("smartcard", __name__)

KIND = "smartcard"
TLS_PATH = "/login/card/tls"


# --------------------------------------------------------------------------- helpers


def card_trust() -> CardTrust | None:
    """None when no trust anchor is configured: card login is off."""
    return settings().smartcard


def crl_store():
    """CRLs shared by every process: in Redis when configured, else in the database."""
    client = current_app.extensions.get("idp.redis")
    if client is not None:
        return RedisCrlStore(client)
    return DatabaseCrlStore(current_app.extensions["idp.engine"])


def card_check(trust: CardTrust) -> service.CardCheck:
    crls = CrlCache(store=crl_store(), trust=trust, clock=clock())
    return service.CardCheck(trust=trust, crls=crls, origin=origin_of(settings().issuer))


def card_method():
    return methods()["smartcard"]


def card_attempt(trust: CardTrust | None = None) -> Attempt:
    """One card answer (``trust``: checked against it) or pick-up, from this address: a card
    is throttled per address only, so the browser's device cookies play no part."""
    context = {"clock": clock()}
    if trust is not None:
        context["check"] = card_check(trust)
    return Attempt(client=Client(ip=client_ip()), now=clock().now(), context=context)


def failure_message(code: str) -> tuple[str, int]:
    message, status = FAILURES.get(code, GENERIC_FAILURE)
    return str(message), status


def refusal(error: MethodError) -> tuple[str, int]:
    if isinstance(error, service.UnknownCardHolderError):
        message = _(
            "No account on this service matches this card (RPPS %(rpps)s). Contact your "
            "administrator.",
            rpps=error.rpps,
        )
        return message, 403
    return failure_message(error.code)


def render_refusal(message: str, status: int):
    body = render_template("card_refused.html", message=message)
    if status == 429:
        return body, status, {"Retry-After": "60"}
    return body, status


def unavailable():
    message = _("Sign-in with a CPS card is not available on this service.")
    return render_error(message, 404)


def api_error(code: str, message: str, status: int) -> Response:
    """Terminal-mode errors as ``smartcard.protocol`` defines them: ``{"error", "message"}``."""
    response = jsonify(error=code, message=message)
    response.status_code = status
    return response


def api_refusal(error: MethodError) -> Response:
    if isinstance(error, service.TransactionUsedError):
        return api_error(error.code, _("This code was already used. Reload the page."), 410)
    if isinstance(error, service.TransactionInvalidError):
        return api_error(
            "unknown_code", _("Unknown or expired code. Check the code on the page."), 404
        )
    message, status = refusal(error)
    return api_error(error.code, message, status)


def bridge_url() -> str:
    return f"http://127.0.0.1:{settings().smartcard_bridge_port}"


def tls_login_url() -> str:
    """The card host's endpoint (``IDP_SMARTCARD_TLS_URL``), or this host behind one proxy."""
    return settings().smartcard_tls_url or settings().issuer + TLS_PATH


def current_login() -> service.StartedLogin | None:
    kept = flow.state().step(KIND)
    return service.resume_login(
        get_db(), transaction=kept.get("transaction"), code=kept.get("code"), clock=clock()
    )


def current_or_new_login() -> service.StartedLogin:
    """The page's pending transaction (a reload keeps the code being typed), or a new one."""
    started = current_login()
    if started is None:
        db = get_db()
        service.discard_login(db, transaction=session_transaction())
        started = service.start_login(db, clock=clock())
        flow.state().set_step(KIND, {"transaction": started.transaction, "code": started.code})
    return started


def session_transaction() -> str | None:
    return flow.state().step(KIND).get("transaction")


def render_login_page(started: service.StartedLogin, *, error: str | None = None, status=200):
    trust = card_trust()
    other_factors = []
    if flow.state().first_factor is not None:
        other_factors = [
            f for f in offered_factors(first_factor_practitioner()) if f != "smartcard"
        ]
    body = render_template(
        "login_card.html",
        login=started,
        error=error,
        bridge_url=bridge_url(),
        origin=origin_of(settings().issuer),
        issuer=settings().issuer,
        tls_enabled=trust.forwarding.is_enabled,
        other_factors=other_factors,
        **login_context(),
    )
    response = Response(body, status=status, mimetype="text/html")
    # The page's script talks to the agent on the loopback address, and to nothing else.
    response.headers["Content-Security-Policy"] = (
        f"{headers.CSP}; connect-src 'self' {bridge_url()}"
    )
    return response


# --------------------------------------------------------------------------- login page


@bp.get("/login/card")
@policy(Policy.PUBLIC, get_changes_state=True)  # starts the card login (a new transaction)
def login():
    if card_trust() is None:
        return unavailable()
    return render_login_page(current_or_new_login())


@bp.post("/login/card")
@policy(Policy.PUBLIC)
def finish():
    """Local bridge: the page posts the agent's answer (never the PIN, which stays local)."""
    trust = card_trust()
    if trust is None:
        return unavailable()
    form = CardAnswerForm()
    if not form.validate_on_submit():
        return render_refusal(*failure_message("malformed_submission"))
    when_throttled(lambda message: render_template("card_refused.html", message=message))
    try:
        authentication = orchestrator().authenticate(
            get_db(),
            card_method(),
            card_attempt(trust),
            {"via": service.BRIDGE, "transaction": session_transaction(), "answer": form.answer()},
        )
    except MethodError as exc:
        return render_refusal(*refusal(exc))
    flow.state().drop_step(KIND)
    complete_login(authentication)
    return after_login()


@bp.get("/login/card/status")
@policy(Policy.PUBLIC, get_changes_state=False)
def status():
    """Terminal-mode progress of this browser's own transaction (JSON, polled by the page)."""
    state = service.login_state(get_db(), transaction=session_transaction(), clock=clock())
    body = {"status": state.status}
    if state.failure:
        body["message"] = failure_message(state.failure)[0]
    return jsonify(body)


@bp.post("/login/card/complete")
@policy(Policy.PUBLIC)
def complete():
    """Terminal mode: pick up the login the agent confirmed for this browser's code, once."""
    if card_trust() is None:
        return unavailable()
    if not EmptyForm().validate_on_submit():
        abort(400)
    pending = current_login()
    try:
        authentication = orchestrator().pick_up(
            get_db(),
            card_method(),
            card_attempt(),
            {"via": service.CODE, "transaction": session_transaction()},
        )
    except AccountUnavailableError as exc:
        return render_refusal(*refusal(exc))
    except service.TransactionInvalidError:
        if pending is not None:
            message = _(
                "The agent has not confirmed this sign-in yet. Run the command, then continue."
            )
            return render_login_page(pending, error=message, status=409)
        state = service.login_state(get_db(), transaction=session_transaction(), clock=clock())
        return render_refusal(*failure_message(state.failure or "transaction_invalid"))
    flow.state().drop_step(KIND)
    complete_login(authentication)
    return after_login()


# --------------------------------------------------------------------------- terminal-mode API


@bp.route("/smartcard/code/<code>", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=True)  # the agent's API: unknown codes are throttled
def code_api(code: str):
    """``smartcard.protocol``'s terminal mode, called by the agent (CSRF-exempt, JSON only)."""
    trust = card_trust()
    if trust is None:
        return api_error("unavailable", _("Sign-in with a CPS card is not available."), 404)
    when_throttled(lambda message: api_error("throttled", message, 429))
    try:
        if request.method == "GET":
            signing_request = service.signing_request(
                get_db(),
                code=code,
                origin=origin_of(settings().issuer),
                ip=client_ip(),
                throttle=throttle(),
                clock=clock(),
            )
            return jsonify(
                origin=signing_request.origin,
                transaction=signing_request.transaction,
                challenge=signing_request.challenge,
            )
        if request.mimetype != "application/json":
            return api_error("unsupported_media_type", _("Send JSON."), 415)
        if (request.content_length or 0) > MAX_MESSAGE_BYTES:
            return api_error("payload_too_large", _("The request is too large."), 413)
        try:
            body = jsonlimits.loads(request.get_data(), max_bytes=MAX_MESSAGE_BYTES)
        except jsonlimits.JSONLimitError:
            body = None
        if not isinstance(body, dict) or body.get("code") != code:
            return api_error("bad_request", _("The request is malformed."), 400)
        answer = {key: value for key, value in body.items() if key != "code"}
        orchestrator().authenticate(
            get_db(),
            card_method(),
            card_attempt(trust),
            {"via": service.CODE, "code": code, "answer": answer},
        )
    except MethodError as exc:
        return api_refusal(exc)
    return jsonify(status="ok")


# --------------------------------------------------------------------------- TLS client certificate


@bp.get("/login/card/tls/start")
@policy(Policy.PUBLIC, get_changes_state=True)  # a redirect chain: starts the transaction
def tls_start():
    """Send the browser to the card host, which asks for the card's certificate."""
    trust = card_trust()
    if trust is None or not trust.forwarding.is_enabled:
        return unavailable()
    started = current_or_new_login()
    return redirect(f"{tls_login_url()}?{urlencode({'t': started.transaction})}", code=303)


@bp.get(TLS_PATH)
@policy(Policy.PUBLIC, get_changes_state=True)  # the card host completes it (a redirect)
def tls_login():
    """On the card host, behind the proxy that checked the TLS client certificate.

    The headers count only from ``IDP_TRUSTED_PROXIES``, compared with the raw WSGI
    ``REMOTE_ADDR`` (the TCP peer). This host never sees the main host's session: see
    ``idp.factors.smartcard.login.new_result`` for how the login is bound to the browser.
    """
    trust = card_trust()
    if trust is None:
        return unavailable()
    forwarding = trust.forwarding
    result = service.new_result()
    when_throttled(lambda _message: back_to_main_host(error="throttled"))
    try:
        orchestrator().authenticate(
            get_db(),
            card_method(),
            card_attempt(trust),
            {
                "via": service.TLS,
                "transaction": request.args.get("t"),
                "header_value": request.headers.get(forwarding.cert_header),
                "verify_value": request.headers.get(forwarding.verify_header),
                "remote_addr": request.environ.get("REMOTE_ADDR", ""),
                "result": result,
            },
        )
    except MethodError as exc:
        return back_to_main_host(error=exc.code)
    return back_to_main_host(r=result)


def back_to_main_host(**params: str):
    """To the issuer's host, where the session that started the login lives."""
    target = settings().issuer + url_for("smartcard.tls_return") + "?" + urlencode(params)
    return redirect(target, code=303)


@bp.get("/login/card/tls/return")
@policy(Policy.PUBLIC, get_changes_state=True)  # back from the card host: the login
def tls_return():
    if card_trust() is None:
        return unavailable()
    error = request.args.get("error")
    if error is not None:
        return render_refusal(*failure_message(error if error in FAILURES else ""))
    try:
        authentication = orchestrator().pick_up(
            get_db(),
            card_method(),
            card_attempt(),
            {
                "via": service.TLS,
                "transaction": session_transaction(),
                "result": request.args.get("r"),
            },
        )
    except AccountUnavailableError as exc:
        return render_refusal(*refusal(exc))
    except service.TransactionInvalidError:
        return render_refusal(*failure_message("transaction_invalid"))
    flow.state().drop_step(KIND)
    complete_login(authentication)
    return after_login()


# --------------------------------------------------------------------------- account


@bp.post("/account/smartcard/<int:card_id>/remove")
@policy(Policy.RECENT_STRONG)
def remove(card_id: int):
    if not EmptyForm().validate_on_submit():
        abort(400)
    method = methods().get("smartcard")
    if method is None:  # card login off: no card is listed, none can be removed
        abort(404)
    try:
        orchestrator().remove(
            get_db(), method, current_auth().practitioner_id, card_id, now=clock().now()
        )
    except LastFactorError:
        return render_error(_("You cannot remove your last factor."), 409)
    except NoSuchEnrolmentError:
        abort(404)
    return redirect(url_for("accounts.home", done="removed"), code=303)
