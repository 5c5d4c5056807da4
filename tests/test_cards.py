"""Model cards: field-level validation (identifiers, BibTeX), and every built-in card valid."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import zoo
from zoo.cards import ModelCard, parse_bibtex, validate_card
from zoo.contract import ModelOutputError, capabilities, not_applicable, validate_output

GOOD = ModelCard(
    name="x", family="x", title="A Title", authors="A. Author", year=2020, arxiv="2008.02389", bibkey="a2020t",
    bibtex="@article{a2020t,\n  title = {A {T}itle},\n  author = {Author, A.},\n  year = 2020\n}", variant="v",
    differences="none", venue="arXiv preprint", licence="MIT",
)


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_registered_card_is_valid(name: str) -> None:
    assert validate_card(zoo.model_card(name)) == []


@pytest.mark.parametrize(("changes", "message"), [
    ({"arxiv": "1234.5"}, "arxiv: '1234.5' is not an arXiv id"),
    ({"arxiv": "arXiv:2008.02389"}, "is not an arXiv id"),
    ({"title": " "}, "title: empty"),
    ({"licence": ""}, "licence: empty"),
    ({"year": 20}, "year: 20 is not a plausible"),
    ({"arxiv": "", "url": ""}, "arxiv/doi/url: give at least one"),
    ({"doi": "doi.org/10.1/x"}, "doi: 'doi.org/10.1/x' is not a DOI"),
    ({"url": "javascript:alert(1)"}, "url: 'javascript:alert(1)' is not an http(s) URL"),
    ({"capabilities": ("nfe", "teleport")}, "capabilities:"),
    ({"bibtex": "@article{a2020t, title = {x}, author = {y}, year = {2020}"}, "bibtex: unbalanced braces"),
    ({"bibtex": "@article{other, title = {x}, author = {y}, year = {2020}}"}, "entry key 'other' differs"),
    ({"bibtex": "@article{a2020t, title = {x}, year = {2020}}"}, "bibtex: no author field"),
    ({"bibtex": "A Title, by A. Author"}, "bibtex: does not start with '@type{key,'"),
])
def test_bad_card_fields_get_field_level_messages(changes: dict, message: str) -> None:
    card = dataclasses.replace(GOOD, **changes)
    problems = validate_card(card)
    assert any(message in p for p in problems), problems


@pytest.mark.parametrize("ident", ["2008.02389", "2008.02389v3", "0801.1234", "math/0601001", "hep-th/9901001v2",
                                   "math.GT/0309136"])
def test_valid_arxiv_ids_pass(ident: str) -> None:
    card = dataclasses.replace(GOOD, arxiv=ident, url="")
    assert validate_card(card) == [] and card.link == f"https://arxiv.org/abs/{ident}"


def test_a_doi_or_url_alone_is_enough() -> None:
    assert validate_card(dataclasses.replace(GOOD, arxiv="", url="", doi="10.1109/CVPR.2016.90")) == []
    assert validate_card(dataclasses.replace(GOOD, arxiv="", url="https://example.org/paper")) == []


def test_bibtex_parser_reads_type_key_and_fields() -> None:
    kind, key, fields = parse_bibtex(GOOD.bibtex)
    assert (kind, key) == ("article", "a2020t") and fields == {"title": "A {T}itle", "author": "Author, A.",
                                                               "year": "2020"}


def test_from_dict_rejects_unknown_and_missing_fields() -> None:
    with pytest.raises(ValueError, match="unknown field.*colour"):
        ModelCard.from_dict({**GOOD.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="lacks required field.*title"):
        ModelCard.from_dict({k: v for k, v in GOOD.to_dict().items() if k != "title"})


def test_capabilities_of_a_plain_module_and_of_the_zoo() -> None:
    plain = nn.Linear(2, 2)
    assert capabilities(plain) == frozenset()
    assert "nfe" in not_applicable(plain) and "dt_fewest_nfe" in not_applicable(plain)
    node = zoo.create_model("neural-ode", input_shape=(2,), num_classes=2, width=8, depth=2)
    assert capabilities(node) == {"nfe", "depth_transfer", "trajectories"}  # per-example steps: not batch-coupled
    coupled = zoo.create_model("neural-ode", input_shape=(2,), num_classes=2, width=8, depth=2, backend="torchdiffeq")
    assert capabilities(coupled) == {"nfe", "depth_transfer", "trajectories", "batch_coupling"}
    assert capabilities(node.manifest("rk4", 2)) == {"nfe", "depth_transfer", "trajectories"}  # fixed steps
    assert not_applicable(node) == []

    class Regularised(nn.Linear):
        def regulariser(self) -> torch.Tensor:
            return self.weight.square().sum()

    assert capabilities(Regularised(2, 2)) == {"regulariser"}


def test_validate_output_messages() -> None:
    assert validate_output(torch.zeros(3, 2), 3, (2,)).shape == (3, 2)
    for bad, message in [((torch.zeros(3, 2),), "returned a tuple"), (torch.zeros(3, 3), "shape (3, 3), expected"),
                         (torch.zeros(3, 2, dtype=torch.long), "dtype torch.int64"),
                         (torch.tensor([[0.0, float("nan")]] * 3), "non-finite values (NaN or inf) for 3 of 3")]:
        with pytest.raises(ModelOutputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate_output(bad, 3, (2,))
