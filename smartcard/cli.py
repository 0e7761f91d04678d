"""``idp-smartcard``: the workstation agent's command line.

``list`` shows what the agent sees; ``bridge`` serves the IdP login page on 127.0.0.1;
``login`` signs a login identified by a code (terminal mode). The PIN is always read with
getpass, never from an argument (arguments end up in shell history and process lists).
"""

from __future__ import annotations

import getpass
import logging
import sys

import click

from smartcard import errors
from smartcard.bridge import BridgeConfig, serve_bridge
from smartcard.certinfo import CertificateInfoError, load_certificate, read_certificate_info
from smartcard.protocol import DEFAULT_BRIDGE_PORT, DEFAULT_MECHANISM, SUPPORTED_MECHANISMS
from smartcard.terminal import terminal_login
from smartcard.token import list_tokens, load_module, read_auth_certificate, resolve_module_path

module_option = click.option(
    "--module",
    "module",
    default=None,
    help="PKCS#11 library (default: $IDP_SMARTCARD_MODULE, OpenSC)",
)
token_option = click.option("--token", "token_label", default=None, help="Token label to use")
mechanism_option = click.option(
    "--mechanism",
    type=click.Choice(sorted(SUPPORTED_MECHANISMS)),
    default=DEFAULT_MECHANISM,
    show_default=True,
)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: agent errors become one readable line and exit status 1."""
    try:
        cli.main(args=argv, prog_name="idp-smartcard", standalone_mode=False)
    except errors.SmartcardError as exc:
        click.echo(f"erreur / error: {exc}", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    return 0


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (never shows PINs)")
def cli(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO)


@cli.command("list")
@module_option
def list_command(module: str | None) -> None:
    """Readers, cards and the authentication certificate."""
    lib = load_module(resolve_module_path(module=module))
    for token in list_tokens(lib=lib):
        click.echo(
            f"{token.slot_description}: {token.label} ({token.manufacturer}, {token.serial})"
        )
        try:
            der = read_auth_certificate(lib=lib, token_label=token.label)
            info = read_certificate_info(load_certificate(der))
        except (errors.NoCertificateError, CertificateInfoError) as exc:
            click.echo(f"  {exc}")
            continue
        click.echo(f"  titulaire / holder: {info.given_name} {info.surname}")
        click.echo(f"  RPPS: {info.rpps or '-'} (idNat {info.id_nat})")
        click.echo(f"  profession: {info.profession_label or '-'}")
        click.echo(f"  expire / expires: {info.not_after:%Y-%m-%d}")


@cli.command("bridge")
@click.option("--origin", required=True, help="The IdP origin, e.g. https://idp.example")
@click.option("--port", type=int, default=DEFAULT_BRIDGE_PORT, show_default=True)
@module_option
@token_option
@mechanism_option
def bridge_command(
    origin: str, port: int, module: str | None, token_label: str | None, mechanism: str
) -> None:
    """Serve the IdP login page on 127.0.0.1 (one origin only)."""
    lib = load_module(resolve_module_path(module=module))
    try:
        config = BridgeConfig(origin=origin, lib=lib, token_label=token_label, mechanism=mechanism)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--origin") from exc
    serve_bridge(config=config, port=port)


@cli.command("login")
@click.option("--issuer", required=True, help="The IdP URL, e.g. https://idp.example")
@click.option("--code", required=True, help="The code shown on the login page")
@module_option
@token_option
@mechanism_option
def login_command(
    issuer: str, code: str, module: str | None, token_label: str | None, mechanism: str
) -> None:
    """Sign the login shown with CODE in the browser (terminal mode)."""
    lib = load_module(resolve_module_path(module=module))
    pin = getpass.getpass("Code PIN / PIN: ")
    terminal_login(
        issuer=issuer,
        code=code,
        lib=lib,
        pin=pin,
        token_label=token_label,
        mechanism=mechanism,
    )
    click.echo("Connexion validée / login confirmed")


if __name__ == "__main__":
    sys.exit(main())
