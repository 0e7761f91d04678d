"""Profession codes of the RPPS directory (the ``profession_code`` of a practitioner)."""

PROFESSIONS = {
    "10": "Médecin", "21": "Pharmacien", "26": "Audioprothésiste", "28": "Opticien-Lunetier",
    "31": "Assistant dentaire", "32": "Physicien médical", "40": "Chirurgien-Dentiste",
    "50": "Sage-Femme", "60": "Infirmier", "69": "Infirmier psychiatrique",
    "70": "Masseur-Kinésithérapeute", "80": "Pédicure-Podologue",
    "86": "Technicien de laboratoire médical", "91": "Orthophoniste", "92": "Orthoptiste",
    "94": "Ergothérapeute", "95": "Diététicien", "96": "Psychomotricien",
    "98": "Manipulateur ERM",
}  # fmt: skip
