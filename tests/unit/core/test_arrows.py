"""Which way imports run between the packages of idp/ and the smart-card agent.

The layers, their allowed arrows and today's known violations are in ``arrows.toml`` beside
this file. The code is read with ``ast``, never imported.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PACKAGES = ("idp", "smartcard")


# --- Reading the code ------------------------------------------------------------------------


def discover(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the checked packages, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: set[str]):
        self.package = module.split(".") if is_package else module.split(".")[:-1]
        self.modules = modules
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:  # the body never runs; an else branch does
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package[: len(self.package) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            self.found.add(submodule if submodule in self.modules else source)


def imports_of(
    module: str, source: str, modules: set[str], *, is_package: bool = False
) -> set[str]:
    """The modules ``module`` imports, anywhere in its source but under ``if TYPE_CHECKING:``."""
    visitor = _Imports(module, is_package, modules)
    visitor.visit(ast.parse(source))
    visitor.found.discard(module)
    return visitor.found


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    names = set(found)
    return {
        module: imports_of(module, path.read_text(), names, is_package=path.name == "__init__.py")
        for module, path in found.items()
    }


# --- The table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    layer: str
    unit: str  # the entry that matched: a factor is one unit of the factor layer


@dataclass(frozen=True)
class Table:
    layers: dict
    pure: list
    known: list[str]

    @classmethod
    def load(cls, path: Path = HERE / "arrows.toml") -> Table:
        data = tomllib.loads(path.read_text())
        return cls(data["layers"], data.get("pure", []), data.get("known", {}).get("imports", []))

    def entries(self):
        for layer, spec in self.layers.items():
            for entry in spec["modules"]:
                yield layer, entry

    def place(self, module: str) -> Place | None:
        best, best_rank = None, None
        for layer, entry in self.entries():
            if entry.endswith(".*"):
                base = entry[:-2]
                if module != base and not module.startswith(base + "."):
                    continue
                rank = (len(base), 0)
            elif module == entry:
                rank = (len(entry), 1)
            else:
                continue
            if best_rank is None or rank > best_rank:
                best, best_rank = Place(layer, entry), rank
        return best


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _internal(name: str) -> bool:
    return any(_matches(name, package) for package in PACKAGES)


def arrow_violations(graph: dict[str, set[str]], table: Table) -> dict[str, str]:
    """``"importer -> imported"``: the rule it breaks, for every forbidden arrow between layers."""
    broken = {}
    for importer, targets in graph.items():
        here = table.place(importer)
        if here is None:
            continue  # reported by test_every_module_has_a_layer
        spec = table.layers[here.layer]
        allowed = spec["may_import"]
        for target in sorted(filter(_internal, targets)):
            there = table.place(target)
            edge = f"{importer} -> {target}"
            if there is None:
                broken[edge] = f"{target} belongs to no layer"
            elif there.layer == here.layer:
                if spec.get("separate") and there.unit != here.unit:
                    mine, theirs = here.unit.removesuffix(".*"), there.unit.removesuffix(".*")
                    broken[edge] = f"{here.layer} {mine} may not import {there.layer} {theirs}"
            elif "*" not in allowed and there.layer not in allowed:
                broken[edge] = f"{here.layer} may not import {there.layer}"
    return broken


def purity_violations(graph: dict[str, set[str]], table: Table) -> dict[str, str]:
    """What a pure module reaches that it must not, itself or through the modules it imports."""
    broken = {}
    for rule in table.pure:
        for module in sorted(graph):
            if not any(fnmatchcase(module, pattern) for pattern in rule["modules"]):
                continue
            chain = {module: []}  # how the module reaches each one it imports, shortest first
            todo = [module]
            while todo:
                current = todo.pop(0)
                for target in sorted(graph.get(current, ())):
                    for forbidden in rule["forbid"]:
                        if _matches(target, forbidden):
                            via = ", ".join(chain[current])
                            broken.setdefault(
                                f"{module} -> {forbidden}",
                                rule["reason"] + (f"; via {via}" if via else ""),
                            )
                    if target in graph and target not in chain:
                        chain[target] = [*chain[current], target]
                        todo.append(target)
    return broken


def violations(graph: dict[str, set[str]], table: Table) -> dict[str, str]:
    return arrow_violations(graph, table) | purity_violations(graph, table)


def compare(found: dict[str, str], known: list[str]) -> tuple[list[str], list[str]]:
    """(new violations, with their rule; known entries that no longer happen)."""
    new = [f"{edge} ({rule})" for edge, rule in sorted(found.items()) if edge not in known]
    gone = sorted(set(known) - set(found))
    return new, gone


# --- The tests -------------------------------------------------------------------------------

TABLE = Table.load()
MODULES = discover()
GRAPH = import_graph(MODULES)


def test_every_module_has_a_layer():
    """A new top-level module or package is placed in arrows.toml deliberately."""
    assert [module for module in MODULES if TABLE.place(module) is None] == []


def test_every_entry_of_the_table_names_code_that_exists():
    """An entry left behind by a move would otherwise hide the module it used to place."""
    stale = []
    for layer, entry in TABLE.entries():
        base = entry.removesuffix(".*")
        if not any(_matches(module, base) for module in MODULES):
            stale.append(f"{layer}: {entry}")
    for layer, spec in TABLE.layers.items():
        stale.extend(
            f"{layer} may import unknown layer {other}"
            for other in spec["may_import"]
            if other != "*" and other not in TABLE.layers
        )
    for rule in TABLE.pure:
        stale.extend(
            f"pure: {pattern}"
            for pattern in rule["modules"]
            if not any(fnmatchcase(module, pattern) for module in MODULES)
        )
    assert stale == []


def test_the_known_list_has_no_duplicates():
    assert sorted(TABLE.known) == sorted(set(TABLE.known))


def test_imports_follow_the_arrows():
    new, _ = compare(violations(GRAPH, TABLE), TABLE.known)
    assert new == [], "forbidden imports (fix them; arrows.toml says which way imports run):\n" + (
        "\n".join(new)
    )


def test_every_known_violation_still_happens():
    """Once fixed, an entry is removed from the known list: it only shrinks."""
    _, gone = compare(violations(GRAPH, TABLE), TABLE.known)
    assert gone == [], "no longer happening, remove from [known] in arrows.toml:\n" + "\n".join(
        gone
    )


SYNTHETIC = """
from typing import TYPE_CHECKING

from idp.auth import contract
from idp.factors.webauthn import method
from . import verify
import flask

if TYPE_CHECKING:
    from idp.oauth.views import bp


def later():
    from idp.accounts.service import AccountError
"""


def test_the_checker_catches_forbidden_imports():
    """A synthetic factor module importing another factor, account code (lazily) and flask."""
    module = "idp.factors.totp.synthetic"
    names = set(MODULES) | {module}
    imported = imports_of(module, SYNTHETIC, names)
    assert imported == {
        "typing",
        "idp.auth.contract",
        "idp.factors.webauthn.method",
        "idp.factors.totp.verify",
        "flask",
        "idp.accounts.service",
    }
    found = violations({**GRAPH, module: imported}, TABLE)
    new, _ = compare(found, TABLE.known)
    assert new == [
        "idp.factors.totp.synthetic -> idp.accounts.service (factor may not import accounts)",
        "idp.factors.totp.synthetic -> idp.factors.webauthn.method"
        " (factor idp.factors.totp may not import factor idp.factors.webauthn)",
    ]

    # A pure verifier importing a framework directly, and the database through two modules.
    graph = {
        "idp.factors.totp.verify": {"werkzeug.exceptions", "idp.clock"},
        "idp.clock": {"idp.models"},
        "idp.models": {"sqlalchemy.orm"},
    }
    reason = "a verifier is pure: no web framework, no database"
    assert compare(purity_violations(graph, TABLE), []) == (
        [
            f"idp.factors.totp.verify -> sqlalchemy ({reason}; via idp.clock, idp.models)",
            f"idp.factors.totp.verify -> werkzeug ({reason})",
        ],
        [],
    )

    # The agent may not import the server at all; the server's bottom layer may not reach up.
    graph = {**GRAPH, "smartcard.bridge": {"idp.crypto"}, "idp.models": {"idp.auth.flow"}}
    new, _ = compare(violations(graph, TABLE), TABLE.known)
    assert new == [
        "idp.models -> idp.auth.flow (base may not import auth)",
        "smartcard.bridge -> idp.crypto (agent may not import base)",
    ]


def test_relative_imports_resolve_against_the_package():
    names = set(MODULES)
    assert imports_of("idp.auth", "from . import flow", names, is_package=True) == {"idp.auth.flow"}
    assert imports_of("idp.oauth.views", "from ..auth import assurance", names) == {
        "idp.auth.assurance"
    }
    assert imports_of("idp.oauth.views", "from .claims import user_claims", names) == {
        "idp.oauth.claims"
    }
