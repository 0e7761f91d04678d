"""Operator commands. This command-line contract is relied on by operators and tooling:

``idp db upgrade`` · ``idp db grants`` · ``idp serve`` · ``idp practitioner invite`` (``add``)
· ``idp practitioner import|list|show|disable|enable|unlock`` · ``idp invite resend`` ·
``idp audit tail`` · ``idp recovery list|show|approve|deny`` · ``idp mail send|status`` ·
``idp client add`` · ``idp routes`` · ``idp keys rotate`` · ``idp seed-demo --json`` · ``idp demo``
"""

from __future__ import annotations

import getpass
import json
import os
import sys

import click

from idp.config import ConfigError, check_keys, load_settings
from idp.db import dispose as dispose_app
from idp.models import PractitionerStatus, RecoveryStatus

PRACTITIONER_STATUSES = PractitionerStatus.ALL
RECOVERY_STATUSES = RecoveryStatus.ALL


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def make_app():
    from idp import create_app

    try:
        return create_app()
    except ConfigError as exc:
        fail(str(exc))


@click.group()
def main() -> None:
    """Practitioner identity provider."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations to IDP_DATABASE_URL (default: SQLite in the instance folder)."""
    from idp.db import upgrade

    settings = load_settings()
    if settings.database_url.startswith("sqlite:///"):
        os.makedirs(
            os.path.dirname(settings.database_url.removeprefix("sqlite:///")), exist_ok=True
        )
    upgrade(settings.database_url)
    click.echo("database is up to date")


@db.command("prune")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object")
def db_prune(as_json: bool) -> None:
    """Delete what expired (tokens, codes, sessions, challenges, counters, sent mail, links,
    closed recovery requests), in short batches; never the audit trail."""
    from idp.housekeeping import prune_app

    app = make_app()
    try:
        removed = prune_app(app)
    finally:
        dispose_app(app)
    if as_json:
        click.echo(json.dumps(removed))
    else:
        for kind, count in removed.items():
            click.echo(f"{kind}: {count}")


@db.command("grants")
@click.option("--role", required=True, help="PostgreSQL role the server connects as")
@click.option("--apply", "apply_", is_flag=True, help="Run them on IDP_DATABASE_URL (the owner)")
def db_grants(role: str, apply_: bool) -> None:
    """Print (or apply) the privileges of the server's own PostgreSQL role.

    The role may only add to and read the audit trail. Run again after each upgrade.
    """
    from idp import grants

    settings = load_settings()
    if not grants.is_postgresql(settings.database_url):
        fail(
            "IDP_DATABASE_URL is not PostgreSQL: SQLite has no database roles, so there is "
            "nothing to grant (the append-only triggers still protect the audit trail)"
        )
    try:
        statements = (
            grants.apply_grants(settings.database_url, role)
            if apply_
            else grants.grant_statements(role)
        )
    except grants.GrantsError as exc:
        fail(str(exc))
    click.echo("BEGIN;")
    for statement in statements:
        click.echo(f"{statement};")
    click.echo("COMMIT;")
    if apply_:
        click.echo(f"applied: role {role} can only add to and read audit_events", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option(
    "--workers",
    envvar="IDP_WORKERS",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Processes (env IDP_WORKERS); one per core is a good start",
)
@click.option(
    "--threads",
    envvar="IDP_THREADS",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Request threads of each worker (env IDP_THREADS)",
)
@click.option(
    "--access-log/--no-access-log",
    envvar="IDP_ACCESS_LOG",
    default=True,
    show_default=True,
    help="One redacted line a request on standard output (env IDP_ACCESS_LOG)",
)
def serve(host: str, port: int, workers: int, threads: int, access_log: bool) -> None:
    """Serve the IdP with gunicorn: WORKERS processes of THREADS threads each, keep-alive."""
    from idp.wsgi_server import run

    os.environ["IDP_THREADS"] = str(threads)  # the workers' settings: pools sized to match
    try:
        settings = load_settings()
        check_keys(settings)
    except ConfigError as exc:
        fail(str(exc))
    app = make_app()
    with app.app_context():  # before forking, so workers never race to create keys
        from idp.db import get_db
        from idp.oauth.keys import ensure_keys
        from idp.services import cipher, clock

        ensure_keys(get_db(), cipher=cipher(), clock=clock())
    dispose_app(app)
    run(host=host, port=port, workers=workers, threads=threads, access_log=access_log)


@main.group()
def practitioner() -> None:
    """Practitioner accounts."""


@practitioner.command("invite")
@click.option("--rpps", required=True, help="11-digit RPPS identifier")
@click.option("--given-name", required=True)
@click.option("--family-name", required=True)
@click.option(
    "--profession",
    "profession_code",
    default="10",
    show_default=True,
    help="Profession code (TRE_G15), e.g. 10 Médecin, 21 Pharmacien, 60 Infirmier",
)
@click.option("--email", required=True)
def practitioner_add(rpps, given_name, family_name, profession_code, email) -> None:
    """Create an invited practitioner and print a one-time enrolment link (JSON)."""
    from idp.accounts import service
    from idp.services import clock

    app = make_app()
    with app.app_context():
        from idp.db import get_db

        session = get_db()
        try:
            created = service.create_practitioner(
                session,
                rpps=rpps,
                given_name=given_name,
                family_name=family_name,
                profession_code=profession_code,
                email=email,
                clock=clock(),
            )
        except service.AccountError as exc:
            fail(str(exc))
        token = service.create_invitation(session, practitioner=created, clock=clock())
        session.commit()
        click.echo(
            json.dumps(
                {
                    "rpps": created.rpps,
                    "status": created.status,
                    "enrolment_url": service.enrolment_url(token),
                    "expires_in_hours": int(service.INVITATION_TTL.total_seconds() // 3600),
                }
            )
        )


practitioner.add_command(practitioner_add, "add")  # the earlier name, kept for scripts


def operator_option(command):
    """Every operator action is audited with who did it: ``--operator``, else the Unix user."""
    return click.option(
        "--operator",
        default=lambda: getpass.getuser(),
        show_default="the Unix user",
        help="Name recorded in the audit trail",
    )(command)


def json_option(command):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output")(command)


def practitioner_or_fail(session, rpps: str):
    from idp.accounts import service

    try:
        return service.find_practitioner(session, rpps)
    except service.NoSuchPractitionerError as exc:
        fail(str(exc))


@practitioner.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check every row, import nothing")
@operator_option
def practitioner_import(path, dry_run, operator) -> None:
    """Invite a whole organisation from a CSV file: columns rpps, given_name, family_name,
    profession_code, email (comma or semicolon). Every bad row is reported with its line
    number, and then nothing is imported. Prints one JSON line per practitioner."""
    from idp import audit
    from idp.accounts import service
    from idp.services import clock

    with open(path, encoding="utf-8-sig") as handle:
        text = handle.read()
    app = make_app()
    with app.app_context():
        from idp.db import get_db

        session = get_db()
        try:
            imported = service.import_practitioners(
                session, service.read_import(text), clock=clock(), dry_run=dry_run
            )
        except service.ImportRejectedError as exc:
            for line, problem in exc.problems:
                click.echo(f"line {line}: {problem}", err=True)
            fail(f"{len(exc.problems)} bad row(s): nothing imported")
        if not dry_run:
            audit.record(
                session, "account:practitioner:imported", operator=operator, count=len(imported)
            )
            session.commit()
        for created, token in imported:
            line = {"rpps": created.rpps, "status": "checked" if dry_run else created.status}
            if token is not None:
                line["enrolment_url"] = service.enrolment_url(token)
            click.echo(json.dumps(line))


@practitioner.command("list")
@click.option("--status", type=click.Choice(PRACTITIONER_STATUSES), help="Only this status")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--after", "after_rpps", default="", help="Continue after this RPPS (paging)")
@json_option
def practitioner_list(status, limit, after_rpps, as_json) -> None:
    """Practitioners in RPPS order, one page at a time."""
    from idp.accounts import service

    app = make_app()
    with app.app_context():
        from idp.db import get_db

        rows = [
            service.summary(p)
            for p in service.list_practitioners(
                get_db(), status=status, limit=limit, after_rpps=after_rpps
            )
        ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        name = f"{row['given_name']} {row['family_name']}"
        click.echo(f"{row['rpps']}  {row['status']:<8}  {row['profession_code']:>3}  {name}")


@practitioner.command("show")
@click.argument("rpps")
@json_option
def practitioner_show(rpps, as_json) -> None:
    """One account: identity, status, factors and last login."""
    from idp.accounts import service
    from idp.services import clock, methods

    app = make_app()
    with app.app_context():
        from idp.db import get_db

        session = get_db()
        found = practitioner_or_fail(session, rpps)
        shown = service.details(session, found, methods=methods(), now=clock().now())
    if as_json:
        click.echo(json.dumps(shown))
        return
    for key in ("rpps", "given_name", "family_name", "profession_code", "email", "status"):
        click.echo(f"{key}: {shown[key]}")
    click.echo(f"created_at: {shown['created_at']}")
    click.echo(f"last_login_at: {shown['last_login_at'] or '-'}")
    for factor in shown["factors"]:
        usable = "" if factor["usable"] else " (unusable)"
        click.echo(f"factor: {factor['kind']} {factor['name']!r} {factor['level']}{usable}")
    if shown.get("recovery_codes_left") is not None:
        click.echo(f"recovery_codes_left: {shown['recovery_codes_left']}")


def change_status(rpps: str, operator: str, change) -> None:
    """Apply ``change`` (a service function) to one practitioner, commit, print the status."""
    from idp.accounts import service

    app = make_app()
    with app.app_context():
        from idp.db import get_db

        session = get_db()
        found = practitioner_or_fail(session, rpps)
        try:
            change(session, found, operator=operator)
        except service.StatusChangeError as exc:
            fail(str(exc))
        session.commit()
        click.echo(json.dumps({"rpps": found.rpps, "status": found.status}))


@practitioner.command("disable")
@click.argument("rpps")
@operator_option
def practitioner_disable(rpps, operator) -> None:
    """No more sign-in; open sessions end at their next request, tokens are refused."""
    from idp.accounts.service import disable_practitioner

    change_status(rpps, operator, disable_practitioner)


@practitioner.command("enable")
@click.argument("rpps")
@operator_option
def practitioner_enable(rpps, operator) -> None:
    """Undo ``disable``: active again (or still invited if no password was ever chosen)."""
    from idp.accounts.service import enable_practitioner

    change_status(rpps, operator, enable_practitioner)


@practitioner.command("unlock")
@click.argument("rpps")
@operator_option
@json_option
def practitioner_unlock(rpps, operator, as_json) -> None:
    """Clear the account's throttle counters: locked out by failed attempts, it may try again
    at once (the address limiters stay)."""
    from idp.accounts.service import unlock_practitioner
    from idp.services import throttle

    app = make_app()
    with app.app_context():
        from idp.db import get_db

        session = get_db()
        found = practitioner_or_fail(session, rpps)
        rpps = found.rpps
        cleared = unlock_practitioner(session, found, throttle=throttle(), operator=operator)
        session.commit()
    if as_json:
        click.echo(json.dumps({"rpps": rpps, "cleared": cleared}))
        return
    if not cleared:
        click.echo(f"{rpps}: no throttle counter to clear")
    for counter in cleared:
        click.echo(f"cleared: {counter}")


@main.group()
def invite() -> None:
    """Invitations."""


@invite.command("resend")
@click.argument("rpps")
@operator_option
def invite_resend(rpps, operator) -> None:
    """A new enrolment link for a practitioner still invited; earlier links stop working."""
    from idp.accounts import service
    from idp.services import clock

    app = make_app()
    with app.app_context():
        from idp.db import get_db

        session = get_db()
        found = practitioner_or_fail(session, rpps)
        try:
            token = service.resend_invitation(session, found, clock=clock(), operator=operator)
        except service.StatusChangeError as exc:
            fail(str(exc))
        session.commit()
        click.echo(
            json.dumps(
                {
                    "rpps": found.rpps,
                    "enrolment_url": service.enrolment_url(token),
                    "expires_in_hours": int(service.INVITATION_TTL.total_seconds() // 3600),
                }
            )
        )


@main.group()
def mail() -> None:
    """Email: the outbox and its sender."""


@mail.command("send")
@json_option
def mail_send(as_json) -> None:
    """Deliver the messages due now (the served app also does it every few seconds)."""
    from idp import mail as outbox_mail
    from idp.mail.sender import DISABLED_LINE

    app = make_app()
    if not app.extensions["idp.settings"].mail.enabled:
        click.echo(DISABLED_LINE, err=True)
    report = outbox_mail.deliver_app(app)
    state = outbox_mail.status(app)
    counts = {**report.as_dict(), "waiting": state.waiting}
    if as_json:
        click.echo(json.dumps(counts))
    else:
        click.echo(
            f"sent {report.sent}, retried later {report.retried}, given up {report.given_up}, "
            f"waiting {state.waiting}"
        )
    dispose_app(app)
    if report.unreachable:
        sys.exit(1)


@mail.command("status")
@json_option
def mail_status(as_json) -> None:
    """Messages waiting, given up and sent, and the oldest waiting."""
    from idp import mail as outbox_mail

    app = make_app()
    state = outbox_mail.status(app)
    dispose_app(app)
    if as_json:
        click.echo(json.dumps(state.as_dict()))
        return
    data = state.as_dict()
    click.echo(f"waiting: {data['waiting']}")
    click.echo(f"failed: {data['failed']}")
    click.echo(f"sent: {data['sent']}")
    click.echo(f"oldest waiting: {data['oldest_waiting'] or '-'}")
    click.echo(f"next attempt: {data['next_attempt_at'] or '-'}")
    if not app.extensions["idp.settings"].mail.enabled:
        click.echo("IDP_SMTP_HOST is not set: email is off, messages stay queued")


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command("tail")
@click.option("--practitioner", "rpps", help="Only this practitioner's events (RPPS)")
@click.option("-n", "--lines", default=20, show_default=True, type=click.IntRange(1, 10_000))
@json_option
def audit_tail(rpps, lines, as_json) -> None:
    """The last events, oldest first."""
    from idp.accounts import service

    app = make_app()
    with app.app_context():
        from idp.db import get_db

        session = get_db()
        found = practitioner_or_fail(session, rpps) if rpps else None
        events = service.recent_events(session, practitioner=found, limit=lines)
    for event in events:
        if as_json:
            click.echo(json.dumps(event))
            continue
        who = f" practitioner={event['practitioner_id']}" if event["practitioner_id"] else ""
        client = f" client={event['client_id']}" if event["client_id"] else ""
        details = " ".join(f"{k}={v}" for k, v in sorted(event["details"].items()))
        click.echo(f"{event['at']} {event['event']}{who}{client} {details}".rstrip())


@main.group()
def recovery() -> None:
    """Recovery of accounts whose practitioner lost every factor (four eyes, cooling-off)."""


def recovery_or_fail(session, reference: str):
    from idp.accounts import recovery as recoveries

    try:
        return recoveries.find_request(session, reference)
    except recoveries.NoSuchRequestError as exc:
        fail(str(exc))


@recovery.command("list")
@click.option(
    "--status",
    type=click.Choice(RECOVERY_STATUSES),
    help="Only this status (default: the open ones, pending and approved)",
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@json_option
def recovery_list(status, limit, as_json) -> None:
    """Recovery requests, newest first; those past their time are marked expired first."""
    from idp.accounts import recovery as recoveries
    from idp.services import clock

    app = make_app()
    with app.app_context():
        from idp.db import get_db

        session = get_db()
        recoveries.expire_stale(session, now=clock().now())
        rows = [
            recoveries.summary(session, found)
            for found in recoveries.list_requests(session, status=status, limit=limit)
        ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        approvals = ",".join(a["operator"] for a in row["approvals"]) or "-"
        click.echo(
            f"{row['reference']}  {row['status']:<9}  {row['created_at']}  {row['rpps']}  "
            f"{row['name']}  approvals={approvals}"
        )


@recovery.command("show")
@click.argument("reference")
@json_option
def recovery_show(reference, as_json) -> None:
    """One request: practitioner, dates, approvals, status and its history."""
    from idp.accounts import recovery as recoveries
    from idp.services import clock

    app = make_app()
    with app.app_context():
        from idp.db import get_db

        session = get_db()
        found = recovery_or_fail(session, reference)
        if recoveries.refresh(session, found, now=clock().now()):
            session.commit()
        shown = recoveries.summary(session, found)
        shown["history"] = recoveries.history(session, found)
    if as_json:
        click.echo(json.dumps(shown))
        return
    for key, value in shown.items():
        if key == "approvals":
            for approval in value:
                click.echo(f"approval: {approval['operator']} at {approval['at']}")
        elif key == "history":
            for event in value:
                click.echo(f"history: {event['at']} {event['event']}")
        else:
            click.echo(f"{key}: {value if value is not None else '-'}")


def recovery_decision(decide) -> None:
    """Run ``decide(session, settings, now)`` (a service call), print its JSON result."""
    from idp.accounts import recovery as recoveries
    from idp.services import clock, settings

    app = make_app()
    with app.app_context():
        from idp.db import get_db

        try:
            shown = decide(get_db(), settings(), clock().now())
        except recoveries.RecoveryError as exc:
            fail(str(exc))
    click.echo(json.dumps(shown))


@recovery.command("approve")
@click.argument("reference")
@operator_option
def recovery_approve(reference, operator) -> None:
    """One operator's approval, once their identity check is done. With enough different
    operators (IDP_RECOVERY_APPROVALS), the cooling-off starts and the practitioner receives
    the one-time link by email (never shown here)."""
    from idp.accounts import recovery as recoveries

    def decide(session, settings, now):
        given = recoveries.approve(
            session, reference, operator=operator, rules=recoveries.Rules.of(settings), now=now
        )
        found = recoveries.find_request(session, reference)
        return {
            "reference": recoveries.display(found.reference),
            "status": found.status,
            "approvals": given.given,
            "needed": given.needed,
            "cooling_off_until": (
                found.cooling_off_until.isoformat() if found.cooling_off_until else None
            ),
        }

    recovery_decision(decide)


@recovery.command("deny")
@click.argument("reference")
@click.option("--reason", required=True, help="Why (kept with the request and audited)")
@operator_option
def recovery_deny(reference, reason, operator) -> None:
    """Refuse a request, pending or during its cooling-off: its link stops working."""
    from idp.accounts import recovery as recoveries

    def decide(session, settings, now):
        found = recoveries.deny(session, reference, operator=operator, reason=reason, now=now)
        return {"reference": recoveries.display(found.reference), "status": found.status}

    recovery_decision(decide)


@main.group()
def client() -> None:
    """OAuth / OpenID Connect clients."""


@client.command("add")
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True, required=True)
@click.option("--public", is_flag=True, help="Public client (no secret, PKCE only)")
@click.option(
    "--auth-method",
    type=click.Choice(["client_secret_basic", "client_secret_post"]),
    default="client_secret_basic",
    show_default=True,
)
@click.option(
    "--id-token-alg",
    type=click.Choice(["RS256", "PS256", "ES256"]),
    default="RS256",
    show_default=True,
)
@click.option("--scope", default="openid profile email rpps", show_default=True)
@click.option("--no-consent", is_flag=True, help="First-party app: skip the consent page")
def client_add(name, redirect_uris, public, auth_method, id_token_alg, scope, no_consent) -> None:
    """Register a client; prints client_id and client_secret as JSON (shown once)."""
    from idp.oauth import clients

    app = make_app()
    with app.app_context():
        from idp.db import get_db

        try:
            created, secret = clients.register_client(
                get_db(),
                name=name,
                redirect_uris=list(redirect_uris),
                public=public,
                auth_method=auth_method,
                id_token_alg=id_token_alg,
                scope=scope,
                require_consent=not no_consent,
            )
        except clients.ClientRegistrationError as exc:
            fail(str(exc))
        click.echo(
            json.dumps(
                {
                    "client_id": created.client_id,
                    "client_secret": secret,
                    "token_endpoint_auth_method": created.token_endpoint_auth_method,
                    "redirect_uris": created.redirect_uris,
                }
            )
        )


@main.command()
def routes() -> None:
    """Print every route with its access policy."""
    from idp.auth.policy import route_inventory

    app = make_app()
    rows = route_inventory(app)
    width = max(len(path) for _m, path, _p in rows)
    for methods, path, access in rows:
        click.echo(f"{methods:<10} {path:<{width}}  {access}")
    if any(access == "UNDECLARED" for *_rest, access in rows):
        sys.exit(1)


@main.group()
def keys() -> None:
    """ID token signing keys."""


@keys.command("rotate")
def keys_rotate() -> None:
    """New signing keys; the old ones stay published for a week."""
    from idp.db import get_db
    from idp.oauth.keys import rotate_keys
    from idp.services import cipher, clock

    app = make_app()
    with app.app_context():
        click.echo(json.dumps({"kids": rotate_keys(get_db(), cipher=cipher(), clock=clock())}))


@main.command("seed-demo")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object")
def seed_demo(as_json: bool) -> None:
    """Idempotently create the demo practitioner and demo client."""
    from idp.demo import seed

    app = make_app()
    with app.app_context():
        data = seed()
    if as_json:
        click.echo(json.dumps(data))
    else:
        for key, value in data.items():
            click.echo(f"{key}: {value}")


@main.command()
@click.option("--idp-port", default=5000, show_default=True, type=int)
@click.option("--rp-port", default=5001, show_default=True, type=int)
def demo(idp_port: int, rp_port: int) -> None:
    """Development demo: migrate, seed, run the IdP and a demo relying party."""
    from idp.demo import run_demo

    run_demo(idp_port=idp_port, rp_port=rp_port)


if __name__ == "__main__":
    main()
