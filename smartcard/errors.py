"""Agent errors: one type per situation the practitioner can act on.

Messages are bilingual because the agent runs on French workstations and is supported by people
who may read either language. ``code`` is the stable identifier sent by the bridge.
"""

from __future__ import annotations


class SmartcardError(Exception):
    code = "card_error"
    message = "Erreur de carte / card error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(f"{self.message}: {detail}" if detail else self.message)


class ModuleLoadError(SmartcardError):
    code = "module_unavailable"
    message = "Module PKCS#11 introuvable / PKCS#11 module cannot be loaded"


class NoReaderError(SmartcardError):
    code = "no_reader"
    message = "Aucun lecteur de carte / no card reader found"


class NoTokenError(SmartcardError):
    code = "no_card"
    message = "Aucune carte insérée / no card in the reader"


class AmbiguousTokenError(SmartcardError):
    code = "several_cards"
    message = "Plusieurs cartes présentes, précisez --token / several cards present, use --token"


class NoCertificateError(SmartcardError):
    code = "no_certificate"
    message = (
        "Pas de certificat d'authentification sur la carte / "
        "no authentication certificate on the card"
    )


class PinIncorrectError(SmartcardError):
    code = "pin_incorrect"
    message = "Code PIN incorrect / incorrect PIN"

    def __init__(self, *, count_low: bool = False, final_try: bool = False) -> None:
        self.count_low = count_low
        self.final_try = final_try
        if final_try:
            detail = "dernier essai avant blocage / last try before the card locks"
        elif count_low:
            detail = "peu d'essais restants / few tries left"
        else:
            detail = None
        super().__init__(detail)


class PinLockedError(SmartcardError):
    code = "pin_locked"
    message = "Code PIN bloqué, utilisez le code de déblocage / PIN locked, use the unblocking code"


class PinFormatError(SmartcardError):
    code = "pin_invalid"
    message = "Format de code PIN invalide / invalid PIN format"


class CardRemovedError(SmartcardError):
    code = "card_removed"
    message = "Carte retirée pendant l'opération / card removed during the operation"


class CertificateExpiredError(SmartcardError):
    code = "certificate_expired"
    message = "Certificat de la carte expiré / card certificate expired"


class CertificateNotYetValidError(SmartcardError):
    code = "certificate_not_yet_valid"
    message = "Certificat de la carte pas encore valide / card certificate not yet valid"


class MechanismUnsupportedError(SmartcardError):
    code = "mechanism_unsupported"
    message = "Mécanisme de signature non supporté / signature mechanism not supported"


class OriginMismatchError(SmartcardError):
    code = "origin_mismatch"
    message = "Origine inattendue / unexpected origin"


class ServerError(SmartcardError):
    code = "server_error"
    message = "Réponse inattendue du serveur / unexpected answer from the server"
