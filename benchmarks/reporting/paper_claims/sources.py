"""The seed talks the papers' claims are quoted from, and the quotes themselves, each pinned to its line.

The seed documents (`../shared/seeds/` beside the checkout, or $DEPTHBENCH_SEEDS) are the text of talks on the papers
the zoo implements. A claim is quoted from them verbatim, never from memory: `Quote.check` finds the text on its
stated line. The seeds do not travel with the repository, so every quoted line is pinned in `quoted_lines.json`
(the line's full text and the seed file's SHA-256, written by `python -m benchmarks.reporting.paper_claims.sources
PINNED_SEEDS_DIR`): tests/test_paper_claims.py checks every quote against the pinned lines everywhere, CI included,
and the pinned lines against the seeds wherever the seeds are on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PINNED_LINES = Path(__file__).with_name("quoted_lines.json")


def seeds_dir() -> Path | None:
    """$DEPTHBENCH_SEEDS, else ../shared/seeds beside the checkout (the source tree's, or the working directory's
    where the package is installed, as under tox); None when none holds the seed files."""
    for candidate in (os.environ.get("DEPTHBENCH_SEEDS"), REPO.parent / "shared" / "seeds",
                      Path.cwd().resolve().parent / "shared" / "seeds"):
        if candidate and Path(candidate).is_dir() and any(Path(candidate).glob("*.txt")):
            return Path(candidate)
    return None


@dataclass(frozen=True)
class Source:
    """One seed document: the talk, and the paper its claims come from."""

    seed_file: str  # file name under the seeds folder
    talk: str  # who gave the talk, its title
    paper: str  # "Authors (year), Title"
    url: str  # the paper (arXiv where the seed or its authors give one)
    arxiv: str = ""

    def text(self, folder: Path) -> list[str]:
        return (folder / self.seed_file).read_text(encoding="utf-8").split("\n")


@dataclass(frozen=True)
class Quote:
    """Verbatim text of a seed, on its (1-based) line."""

    source: Source
    line: int
    text: str

    def check(self, folder: Path) -> None:
        """Raise ValueError unless `text` stands on `line` of the seed file."""
        self.check_lines(self.source.text(folder))

    def check_pinned(self, pinned: dict[str, dict]) -> None:
        """Raise ValueError unless `text` stands on `line` as pinned in quoted_lines.json (no seeds needed)."""
        entry = pinned.get(self.source.seed_file, {}).get("lines", {}).get(str(self.line))
        if entry is None:
            raise ValueError(f"{self.cite()} is not pinned: run `python -m {__name__} SEEDS_DIR`")
        if self.text not in entry:
            raise ValueError(f"{self.source.seed_file}: {self.text!r} is not on line {self.line} as pinned: {entry!r}")

    def check_lines(self, lines: list[str]) -> None:
        if not 1 <= self.line <= len(lines) or self.text not in lines[self.line - 1]:
            found = [i + 1 for i, line in enumerate(lines) if self.text in line]
            raise ValueError(f"{self.source.seed_file}: {self.text!r} is not on line {self.line}"
                             + (f" (found on {found})" if found else " (nowhere in the file)"))

    def cite(self) -> str:
        return f"{self.source.seed_file}:{self.line}"


QUEIRUGA = Source("000_4f734b4869891a19.txt", "Michael W. Mahoney, Continuous-in-Depth Neural Networks (talk)",
                  "Queiruga, Erichson, Taylor & Mahoney (2020), Continuous-in-Depth Neural Networks",
                  "https://arxiv.org/abs/2008.02389", "2008.02389")
CHEN = Source("001_f168be8525f4e816.txt",
              "Jodie Zhu (Dessa), Neural Networks as Ordinary Differential Equations (talk)",
              "Chen, Rubanova, Bettencourt & Duvenaud (2018), Neural Ordinary Differential Equations",
              "https://arxiv.org/abs/1806.07366", "1806.07366")
# Zhang's talk reports three works: Chen et al.'s MNIST table, Yan et al.'s robustness tables, and his own line shape.
ZHANG_CHEN = Source("002_ae3b484b0c49e362.txt", "Shihua Zhang, Dynamic View of Deep Learning (talk, Dec 15, 2021)",
                    "Chen, Rubanova, Bettencourt & Duvenaud (2018), Neural Ordinary Differential Equations",
                    "https://arxiv.org/abs/1806.07366", "1806.07366")
YAN = Source("002_ae3b484b0c49e362.txt", "Shihua Zhang, Dynamic View of Deep Learning (talk, Dec 15, 2021)",
             "Yan, Du, Tan & Feng (2020), On Robustness of Neural Ordinary Differential Equations (ICLR)",
             "https://arxiv.org/abs/1910.05513", "1910.05513")
ZHANG = Source("002_ae3b484b0c49e362.txt", "Shihua Zhang, Dynamic View of Deep Learning (talk, Dec 15, 2021)",
               "Gai & Zhang, Deep Learning (ResNet) Learns the Geodesic Curve of Wasserstein Space (the talk's "
               "Part II)",
               "https://arxiv.org/abs/2102.09235", "2102.09235")
HUDSON = Source("003_eb48b84567f27627.txt", "Joshua Hudson (PI), Khachik Sargsyan, Marta D'Elia, Habib Najm, Examining "
                "stiffness in ResNets through interpretation as discretized Neural ODEs (Sandia LDRD #21-0528 talk, "
                "September 19, 2022)", "Hudson, Sargsyan, D'Elia & Najm (2022), Sandia LDRD project talk",
                "https://www.ksargsyan.net/publication/hudson-2023-a/")
YANG = Source("004_ec39f44cac98fc4a.txt", "Zonghan Yang, Yang Liu, Chenglong Bao, Zuoqiang Shi, Interpolation between "
              "Residual And Non-Residual Networks (talk, August 21, 2020)",
              "Yang, Liu, Bao & Shi (2020), Interpolation between Residual and Non-Residual Networks (ICML)",
              "https://arxiv.org/abs/2006.05749", "2006.05749")
SOURCES = (QUEIRUGA, CHEN, YAN, ZHANG, HUDSON, YANG)


def pinned_lines(folder: Path, quotes: list[Quote]) -> dict[str, dict]:
    """Every quoted line's full text per seed file, with the file's SHA-256 (what quoted_lines.json holds)."""
    pinned: dict[str, dict] = {}
    for quote in quotes:
        path = folder / quote.source.seed_file
        entry = pinned.setdefault(quote.source.seed_file, {
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "lines": {}})
        entry["lines"][str(quote.line)] = quote.source.text(folder)[quote.line - 1]
    return {name: {"sha256": e["sha256"], "lines": dict(sorted(e["lines"].items(), key=lambda kv: int(kv[0])))}
            for name, e in sorted(pinned.items())}


def all_quotes() -> list[Quote]:
    from benchmarks.reporting.paper_claims.declared import CLAIMS  # the claims import this module

    return [quote for claim in CLAIMS for quote in (*claim.claim, *claim.numbers)]


def load_pinned() -> dict[str, dict]:
    return json.loads(PINNED_LINES.read_text(encoding="utf-8"))


if __name__ == "__main__":  # python -m benchmarks.reporting.paper_claims.sources SEEDS_DIR
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else seeds_dir()
    if folder is None:
        sys.exit("usage: python -m benchmarks.reporting.paper_claims.sources SEEDS_DIR (the seeds are not on disk)")
    for quote in all_quotes():
        quote.check(folder)
    PINNED_LINES.write_text(json.dumps(pinned_lines(folder, all_quotes()), indent=1, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    print(f"pinned {len(all_quotes())} quotes in {PINNED_LINES}")
