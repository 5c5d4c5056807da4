"""Model cards: what a leaderboard prints about a model (its paper, and how this variant differs), and their schema.

`validate_card` returns one message per bad field ("field: what is wrong; how to fix"); a card must have
every text field filled, a plausible year, an arXiv id (new style ``2008.02389`` / ``2008.02389v2`` or old
style ``math/0601001``) and/or a DOI and/or a URL, and BibTeX that parses (entry type, key equal to `bibkey`,
balanced braces, title/author/year fields).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from zoo.contract import CAPABILITIES

ARXIV_NEW = re.compile(r"^\d{4}\.\d{4,5}(v\d+)?$")
ARXIV_OLD = re.compile(r"^[a-z-]+(\.[A-Z]{2})?/\d{7}(v\d+)?$")
DOI = re.compile(r"^10\.\d{4,9}/\S+$")
URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)


@dataclass(frozen=True)
class ModelCard:
    """What a leaderboard prints about a model: its paper, and how this variant differs from it."""

    name: str
    family: str
    title: str
    authors: str
    year: int
    arxiv: str
    bibkey: str
    bibtex: str
    variant: str
    differences: str = ""
    params: dict[str, int] = field(default_factory=dict)  # parameter counts at default size, per input shape
    venue: str = ""  # where the paper appeared (conference, journal, "arXiv preprint")
    doi: str = ""
    url: str = ""  # any other page of the paper or model (http(s))
    licence: str = ""  # of the model's implementation (SPDX identifier, e.g. MIT)
    capabilities: tuple[str, ...] = ()  # optional capabilities claimed (zoo.contract.CAPABILITIES)
    # Numbers the authors report, compared with the reproduced ones on leaderboards (benchmarks/reporting/claims.py):
    # {"task", "protocol", "metric", "value", "source"[, "tolerance"]}, values in the records' units.
    claims: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for name in ("capabilities", "claims"):  # a dict card read from JSON/TOML gives lists
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def link(self) -> str:
        """Where a leaderboard links the model: its arXiv abstract, else its DOI, else its URL ("" if none)."""
        if self.arxiv:
            return f"https://arxiv.org/abs/{self.arxiv}"
        return f"https://doi.org/{self.doi}" if self.doi else self.url

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "link": self.link}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str | None = None) -> ModelCard:
        """A card from a mapping (a plugin may give a dict); unknown or missing keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k != "link"}  # derived (to_dict writes it): not a field
        data = {**data, **({"name": name} if name is not None else {})}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"card has unknown field(s) {', '.join(unknown)}; fields: {', '.join(sorted(known))}")
        # arXiv is one of three links (arxiv, doi, url; `validate_card` wants at least one), so a dict may leave it
        # out; the dataclass cannot default it without reordering its fields (and every positional construction).
        data = {"arxiv": "", **data}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"card lacks required field(s) {', '.join(missing)}")
        return cls(**data)


def parse_bibtex(text: str) -> tuple[str, str, dict[str, str]]:
    """(entry type, key, fields) of one BibTeX entry; ValueError saying what is malformed.

    Hand-written for one entry and the checks a card needs: bibtexparser (v1) silently skips what it cannot
    parse, which is exactly the error this must report.
    """
    text = text.strip()
    head = re.match(r"@\s*([A-Za-z]+)\s*\{\s*([^,\s{}]+)\s*,", text)
    if not head:
        raise ValueError("does not start with '@type{key,'")
    depth = 0
    for i, char in enumerate(text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            raise ValueError(f"unbalanced braces: a '}}' at character {i} closes nothing")
        if depth == 0 and i >= head.end() and char == "}" and text[i + 1:].strip():
            raise ValueError("text after the entry's closing brace (one entry per card)")
    if depth != 0:
        raise ValueError(f"unbalanced braces: {depth} '{{' never closed")
    body = text[head.end():text.rfind("}")]
    found: dict[str, str] = {}
    pos = 0
    while True:
        match = re.compile(r"\s*([A-Za-z][\w-]*)\s*=\s*").match(body, pos)
        if not match:
            break
        pos, start = match.end(), match.end()
        if body[pos:pos + 1] == "{":
            level = 0
            for j in range(pos, len(body)):
                level += {"{": 1, "}": -1}.get(body[j], 0)
                if level == 0:
                    break
            value, pos = body[pos + 1:j], j + 1
        elif body[pos:pos + 1] == '"':
            end = body.find('"', pos + 1)
            if end < 0:
                raise ValueError(f"field {match.group(1)!r}: unterminated quoted value")
            value, pos = body[pos + 1:end], end + 1
        else:
            bare = re.compile(r"[\w.:-]+").match(body, pos)
            if not bare:
                raise ValueError(f"field {match.group(1)!r}: no value at {body[start:start + 20]!r}")
            value, pos = bare.group(), bare.end()
        found[match.group(1).lower()] = value.strip()
        comma = re.compile(r"\s*,?").match(body, pos)
        pos = comma.end()
    if body[pos:].strip():
        raise ValueError(f"cannot parse fields from {body[pos:pos + 30].strip()!r}")
    return head.group(1).lower(), head.group(2), found


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def validate_card(card: Any) -> list[str]:
    """Field-level problems of `card` (empty list: valid)."""
    if not isinstance(card, ModelCard):
        return [f"card: a {type(card).__name__}, not a zoo.ModelCard (build one with zoo.ModelCard(...) or "
                "ModelCard.from_dict)"]
    problems = []
    for name in ("name", "family", "title", "authors", "venue", "variant", "differences", "licence", "bibkey"):
        if not _text(getattr(card, name)):
            problems.append(f"{name}: empty; fill it in"
                            + (" (write 'none' if the variant is the paper's model)" if name == "differences" else ""))
    if isinstance(card.year, bool) or not isinstance(card.year, int) or not 1950 <= card.year <= 2100:
        problems.append(f"year: {card.year!r} is not a plausible publication year (an int such as 2020)")
    if card.arxiv and not (ARXIV_NEW.match(str(card.arxiv)) or ARXIV_OLD.match(str(card.arxiv))):
        problems.append(f"arxiv: {card.arxiv!r} is not an arXiv id (new style 2008.02389 or 2008.02389v2, "
                        "old style math/0601001)")
    if card.doi and not DOI.match(str(card.doi)):
        problems.append(f"doi: {card.doi!r} is not a DOI (10.<registrant>/<suffix>, without https://doi.org/)")
    if card.url and not URL.match(str(card.url)):
        problems.append(f"url: {card.url!r} is not an http(s) URL")
    if not (card.arxiv or card.doi or card.url):
        problems.append("arxiv/doi/url: give at least one way to find the paper")
    if not isinstance(card.capabilities, tuple) or any(c not in CAPABILITIES for c in card.capabilities):
        problems.append(f"capabilities: {card.capabilities!r} must name only {', '.join(CAPABILITIES)}")
    if not _text(card.bibtex):
        problems.append("bibtex: empty; paste the paper's BibTeX entry")
    else:
        try:
            _, key, bib = parse_bibtex(card.bibtex)
        except ValueError as error:
            problems.append(f"bibtex: {error}")
        else:
            if key != card.bibkey:
                problems.append(f"bibtex: entry key {key!r} differs from bibkey {card.bibkey!r}")
            missing = [f for f in ("title", "author", "year") if not bib.get(f)]
            if missing:
                problems.append(f"bibtex: no {', '.join(missing)} field")
    return problems
