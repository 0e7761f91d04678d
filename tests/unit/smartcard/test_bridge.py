"""The local bridge over real HTTP, signing with the SoftHSM2 card."""

import threading

import pytest
import requests

from idp.factors.smartcard import verify as verifier
from smartcard.bridge import BridgeConfig, make_bridge_server
from smartcard.protocol import signing_payload

pytestmark = pytest.mark.pkcs11

ORIGIN = "https://idp.example"
EVIL = "https://idp.example.evil.test"


@pytest.fixture
def bridge(softhsm, card, clock):
    config = BridgeConfig(origin=ORIGIN, lib=softhsm.lib, token_label=card.label, now=clock.now)
    server = make_bridge_server(config=config, port=0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def sign_body(card, **overrides):
    return {
        "origin": ORIGIN,
        "transaction": "tx-42",
        "challenge": "Zm9vYmFyYmF6cXV4",
        "pin": card.pin,
    } | overrides


def test_binds_loopback_only(bridge):
    assert bridge.startswith("http://127.0.0.1:")


def test_status_for_the_idp(bridge, card, rpps):
    response = requests.get(f"{bridge}/status", headers={"Origin": ORIGIN}, timeout=10)

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    body = response.json()
    assert body["token_present"] is True
    assert card.label in [token["label"] for token in body["tokens"]]
    assert body["certificate"]["rpps"] == rpps
    assert body["certificate"]["surname"] == "MARTIN"


@pytest.mark.parametrize("origin", [EVIL, "null", "http://idp.example", None])
def test_other_origins_get_nothing(bridge, origin):
    headers = {"Origin": origin} if origin else {}

    response = requests.get(f"{bridge}/status", headers=headers, timeout=10)

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden_origin"
    assert "Access-Control-Allow-Origin" not in response.headers


def test_preflight_allows_private_network_for_the_idp(bridge):
    response = requests.options(
        f"{bridge}/sign",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
            "Access-Control-Request-Private-Network": "true",
        },
        timeout=10,
    )

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Private-Network"] == "true"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Origin"] != "*"


def test_preflight_from_another_origin_is_refused(bridge):
    response = requests.options(
        f"{bridge}/sign",
        headers={"Origin": EVIL, "Access-Control-Request-Private-Network": "true"},
        timeout=10,
    )

    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Private-Network" not in response.headers


def test_rebound_host_is_refused(bridge):
    response = requests.get(
        f"{bridge}/status", headers={"Origin": ORIGIN, "Host": "attacker.test"}, timeout=10
    )

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden_host"


def test_sign_over_http_and_verify(bridge, card, card_pki, clock, rpps):
    response = requests.post(
        f"{bridge}/sign", json=sign_body(card), headers={"Origin": ORIGIN}, timeout=30
    )

    assert response.status_code == 200, response.text
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert card.pin not in response.text
    identity = verifier.verify_submission(
        submission=response.json(),
        payload=signing_payload(origin=ORIGIN, transaction="tx-42", challenge="Zm9vYmFyYmF6cXV4"),
        trust_anchors=[card_pki.root.certificate],
        intermediates=[card_pki.intermediate.certificate],
        crls=[card_pki.crl()],
        now=clock.now(),
        policy=verifier.CardPolicy(production=False),
    )
    assert identity.rpps == rpps


def test_sign_refuses_a_foreign_origin_in_the_body(bridge, card):
    response = requests.post(
        f"{bridge}/sign",
        json=sign_body(card, origin=EVIL),
        headers={"Origin": ORIGIN},
        timeout=10,
    )

    assert response.status_code == 403
    assert response.json()["error"] == "origin_mismatch"


def test_sign_refuses_a_foreign_origin_header(bridge, card):
    response = requests.post(
        f"{bridge}/sign", json=sign_body(card), headers={"Origin": EVIL}, timeout=10
    )

    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


def test_sign_requires_json(bridge, card):
    response = requests.post(
        f"{bridge}/sign",
        data="origin=x",
        headers={"Origin": ORIGIN, "Content-Type": "text/plain"},
        timeout=10,
    )

    assert response.status_code == 415


def test_sign_refuses_oversize_bodies(bridge, card):
    response = requests.post(
        f"{bridge}/sign",
        json=sign_body(card, challenge="x" * 20_000),
        headers={"Origin": ORIGIN},
        timeout=10,
    )

    assert response.status_code == 413


def test_wrong_pin_over_http(bridge, card, caplog):
    wrong = "999999" if card.pin != "999999" else "888888"

    with caplog.at_level("DEBUG"):
        response = requests.post(
            f"{bridge}/sign",
            json=sign_body(card, pin=wrong),
            headers={"Origin": ORIGIN},
            timeout=30,
        )

    assert response.status_code == 401
    assert response.json()["error"] == "pin_incorrect"
    assert wrong not in caplog.text
    assert wrong not in response.text


def test_unknown_path(bridge):
    response = requests.get(f"{bridge}/keys", headers={"Origin": ORIGIN}, timeout=10)

    assert response.status_code == 404
