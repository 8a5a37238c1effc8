"""The layers of ARCHITECTURE.md are a checked contract: import-linter's contracts from pyproject.toml.

core data → model layer (finstream.models) → training | serving → flows → CLI; serving and training never
import each other; no import cycles between sibling modules or packages. The contracts are checked on the
real import graph, and shown to catch a wrong-way import added to a copy of that graph.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter.api import read_configuration
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.layers import LayersContract

REPO = Path(__file__).resolve().parents[2]
CONTRACT_TYPES = {"layers": LayersContract, "acyclic_siblings": AcyclicSiblingsContract}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return read_configuration(str(REPO / "pyproject.toml"))


@pytest.fixture(scope="module")
def graph(config: dict[str, Any]) -> grimp.ImportGraph:
    return grimp.build_graph(*config["session_options"]["root_packages"], cache_dir=None)


def _check(config: dict[str, Any], graph: grimp.ImportGraph) -> dict[str, bool]:
    """Contract id -> kept, for every contract in pyproject.toml, on (a copy of) `graph`."""
    kept: dict[str, bool] = {}
    for options in config["contracts_options"]:
        contract = CONTRACT_TYPES[options["type"]](
            name=options["name"], session_options=config["session_options"], contract_options=options
        )
        kept[options["id"]] = contract.check(copy.deepcopy(graph), verbose=False).kept
    return kept


def test_the_layer_contracts_hold_on_the_code(config: dict[str, Any], graph: grimp.ImportGraph) -> None:
    assert _check(config, graph) == {"layers": True, "finstream-package": True, "acyclic": True}


def test_serving_imports_nothing_from_training(graph: grimp.ImportGraph) -> None:
    assert graph.find_shortest_chain(importer="serving", imported="training", as_packages=True) is None
    assert (
        graph.find_shortest_chain(importer="finstream.models", imported="training", as_packages=True) is None
    )


@pytest.mark.parametrize(
    ("importer", "imported", "broken"),
    [
        ("serving.online", "training.dataset", "layers"),  # serving must not reach training
        ("finstream.models.champions", "serving.auth", "layers"),  # the model layer must not import up
        ("finstream.config", "finstream.models.registry", "layers"),  # core must not import the model layer
        ("flows.training", "finstream.cli.main", "layers"),  # flows must not import the CLI
        ("finstream.models.inputs", "finstream.models.windows", "acyclic"),  # windows imports inputs: cycle
    ],
)
def test_a_wrong_way_import_breaks_a_contract(
    config: dict[str, Any], graph: grimp.ImportGraph, importer: str, imported: str, broken: str
) -> None:
    wrong = copy.deepcopy(graph)
    wrong.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    assert _check(config, wrong)[broken] is False


def test_every_finstream_module_is_assigned_a_layer(config: dict[str, Any], graph: grimp.ImportGraph) -> None:
    """The exhaustive contract lists every top-level module of finstream: a new one must be placed."""
    wrong = copy.deepcopy(graph)
    wrong.add_module("finstream.unplaced")
    assert _check(config, wrong)["finstream-package"] is False
