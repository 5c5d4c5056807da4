"""The README's two set-up commands share one environment, pass pip's settings through, and say where things are."""

from __future__ import annotations

import configparser

from data_on_disk import REPO


def _tox() -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO / "tox.ini")
    return config


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_bench_runs_from_the_py_environment_instead_of_building_a_second_one() -> None:
    tox = _tox()
    bench = tox["testenv:bench"]
    # tox 4 rebuilds an env_dir shared by two env names, so bench installs nothing and borrows py's.
    assert bench.get("skip_install", "").strip() == "true"
    assert "extras" not in bench and "deps" not in bench
    assert "tox -e py --notest" in _lines(bench["commands_pre"])
    path = [line for line in _lines(bench["setenv"]) if line.startswith("PATH")]
    assert path and path[0].split("=", 1)[1].strip().startswith("{work_dir}/py/bin{:}")
    assert "{work_dir}/py/bin/*" in _lines(bench["allowlist_externals"])
    assert "env_dir" not in tox["testenv"] and "envdir" not in tox["testenv"], "py must stay at {work_dir}/py"


def test_pip_settings_reach_the_install() -> None:
    # PIP_EXTRA_INDEX_URL / PIP_INDEX_URL pick CPU-only torch wheels on machines without a GPU (README).
    tox = _tox()
    for section in ("testenv", "testenv:bench"):
        assert "PIP_*" in _lines(tox[section]["passenv"]), section


def test_readme_says_where_the_command_is_and_how_to_get_cpu_torch() -> None:
    readme = (REPO / "README.md").read_text()
    setup = readme[readme.index("## Set-up on a fresh machine"):readme.index("## Using the zoo")]
    assert ".tox/py/bin/depthbench" in setup
    assert "PIP_EXTRA_INDEX_URL" in setup and "Compute Platform" in setup
    assert "GB" in setup and "min" in setup  # download size, disk footprint and time of each command
