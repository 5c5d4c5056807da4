"""The study-file frame that every paper-question study writes and `claims.md` reads."""

import json

import pytest

from benchmarks.store.studies import StudyFileError, find_studies, quantity, read_study, write_study


def test_round_trip_keeps_per_seed_values_and_summarises_them(tmp_path):
    path = write_study(tmp_path, study="refinement", task="digits", tier="cpu-study", seeds=[0, 1, 2],
                       per_seed={"refined_accuracy": [0.9, 0.92, 0.94]}, rows=[{"model": "continuousnet"}],
                       provenance={"command": "depthbench refinement"})
    assert path == tmp_path / "refinement" / "digits.json"
    study = read_study(path)
    acc = study["summary"]["refined_accuracy"]
    assert acc["n"] == 3 and acc["values"] == [0.9, 0.92, 0.94]
    assert acc["mean"] == pytest.approx(0.92) and acc["std"] == pytest.approx(0.02)
    assert [s["task"] for s in find_studies(tmp_path, "refinement")] == ["digits"]
    assert find_studies(tmp_path, "compression") == []


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="finite"):
        quantity([1.0, float("nan")])
    with pytest.raises(ValueError, match="2 values for 3 seeds"):
        write_study("/unused", study="s", task="t", tier="x", seeds=[0, 1, 2], per_seed={"q": [1, 2]}, rows=[],
                    provenance={})


def test_damaged_file_names_the_field(tmp_path):
    path = write_study(tmp_path, study="memory", task="pendulum", tier="cpu-study", seeds=[0],
                       per_seed={"q": [1.0]}, rows=[], provenance={})
    payload = json.loads(path.read_text())
    del payload["provenance"]
    path.write_text(json.dumps(payload))
    with pytest.raises(StudyFileError, match="provenance"):
        read_study(path)
    path.write_text("{not json")
    with pytest.raises(StudyFileError, match="cannot read"):
        read_study(path)


def test_recorded_command_names_no_checkout_directory():
    from benchmarks.store.provenance import retyped_command

    assert retyped_command(["/work/wt/x/benchmarks/cli.py", "study", "memory"]) == "depthbench study memory"
    assert retyped_command(["/work/wt/x/benchmarks/cli/__main__.py", "claims"]) == "depthbench claims"
    installed = "/home/u/.tox/py/bin/depthbench"
    assert retyped_command([installed, "run", "--tier", "smoke"]) == "depthbench run --tier smoke"
    assert retyped_command(["pytest", "-k", "a b"]) == "pytest -k 'a b'"
