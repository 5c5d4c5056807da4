"""Each model declared once (issue #21): `@register_model(CARD)` names it by its card, `zoo.models.ORDER` orders the
families, the tiers' `ALL_MODELS` is read from the registry, and the old forms and paths still work with a warning."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import zoo
from benchmarks.protocols import ALL_MODELS, PROTOCOLS
from zoo import registry
from zoo._moved import MOVED

from waiting import SAFETY_NET_S

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_CLASHES", {})
    monkeypatch.setattr(registry, "_DEFINED", dict(registry._DEFINED))


def card(name: str) -> zoo.ModelCard:
    return dataclasses.replace(zoo.model_card("resnet"), name=name)


def tiny(input_shape, num_classes):
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


def other_tiny(input_shape, num_classes):
    return tiny(input_shape, num_classes)


def test_the_name_comes_from_the_card(fresh_registry) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the one-declaration form warns about nothing
        assert zoo.register_model(card("from-card"))(tiny) is tiny
    assert "from-card" in zoo.list_models() and zoo.model_card("from-card").name == "from-card"
    zoo.register_model({**card("from-dict").to_dict()})(other_tiny)
    assert zoo.create_model("from-dict", input_shape=(1, 8, 8), num_classes=10).name == "from-dict"


def test_a_card_without_a_name_is_refused(fresh_registry) -> None:
    data = {k: v for k, v in card("x").to_dict().items() if k != "name"}
    with pytest.raises(ValueError, match="has no `name`"):
        zoo.register_model(data)
    with pytest.raises(TypeError, match="takes the card alone"):
        zoo.register_model(card("x"), card("x"))


def test_the_old_form_warns_and_works(fresh_registry) -> None:
    with pytest.warns(DeprecationWarning, match=r"register_model\('old-form', card\) is deprecated"):
        zoo.register_model("old-form", card("old-form"))(tiny)
    assert zoo.model_card("old-form").name == "old-form"
    nameless = {k: v for k, v in card("x").to_dict().items() if k != "name"}  # a dict card may leave the name out
    with pytest.warns(DeprecationWarning):
        zoo.register_model("old-dict", nameless)(other_tiny)
    assert zoo.model_card("old-dict").name == "old-dict"


def test_the_old_form_with_a_name_that_disagrees_with_the_card_raises(fresh_registry) -> None:
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="the card is named 'resnet'"):
        zoo.register_model("not-resnet", zoo.model_card("resnet"))
    assert "not-resnet" not in zoo.list_models()


def test_a_second_definition_of_a_name_raises_naming_both(fresh_registry) -> None:
    with pytest.raises(registry.ModelNameClash) as error:
        zoo.register_model(card("resnet"))(tiny)
    message = str(error.value)
    assert "'resnet'" in message and "zoo.models.resnet.resnet" in message and "test_zoo_registration.tiny" in message
    assert zoo.registry.model_source("resnet") == "built-in zoo.models.resnet.resnet"  # the first one stands
    zoo.register_model(card("twice"))(tiny)
    with pytest.raises(registry.ModelNameClash, match="test_zoo_registration.other_tiny"):
        zoo.register_model(card("twice"))(other_tiny)
    zoo.register_model(card("twice"))(tiny)  # the same definition again (a reloaded module) is no clash


def test_all_models_is_the_registry_in_order() -> None:
    assert tuple(ALL_MODELS) == zoo.models.builtin_models()
    modules = {name: module for name, module in registry.defined_models().items()
               if module.startswith("zoo.models.")}
    assert set(ALL_MODELS) == set(modules)  # every built-in model, nothing else
    ranks = [zoo.models.ORDER.index(modules[name].rsplit(".", 1)[1]) for name in ALL_MODELS]
    assert ranks == sorted(ranks)  # family by family, in ORDER
    assert tuple(ALL_MODELS)[:3] == ("resnet", "neural-ode", "anode")
    assert all(p.models == ALL_MODELS for p in PROTOCOLS.values())


def test_all_models_behaves_as_its_tuple() -> None:
    names = tuple(ALL_MODELS)
    assert ALL_MODELS == names and len(ALL_MODELS) == len(names) and "resnet" in ALL_MODELS
    assert ALL_MODELS[:2] == names[:2] and ALL_MODELS + ("x",) == (*names, "x") and ("x",) + ALL_MODELS == ("x", *names)
    assert pickle.loads(pickle.dumps(ALL_MODELS)) == names
    assert PROTOCOLS["smoke"].to_json()["models"] == list(names)


def test_every_family_module_is_imported_order_first_and_every_name_of_order_is_a_module() -> None:
    files = {p.stem for p in (ROOT / "zoo" / "models").glob("*.py") if not p.name.startswith("_")}
    assert set(zoo.models.ORDER) <= files  # ORDER places families; a family it leaves out comes after, by name
    assert len(set(zoo.models.ORDER)) == len(zoo.models.ORDER)
    unlisted = sorted(files - set(zoo.models.ORDER))
    assert zoo.models.family_modules() == [*zoo.models.ORDER, *unlisted]


def test_importing_the_protocols_loads_no_zoo_until_a_model_list_is_read() -> None:
    code = ("import sys, benchmarks.protocols as p; assert 'torch' not in sys.modules and 'zoo' not in sys.modules; "
            "assert list(p.SMOKE.models)[0] == 'resnet' and 'zoo' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=SAFETY_NET_S)
    assert result.returncode == 0, result.stderr[-2000:]


def test_old_import_paths_warn_and_give_the_moved_module() -> None:
    code = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import zoo
assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], caught
names = {}
for name in sorted(MOVED):
    with warnings.catch_warnings(record=True) as caught:
        exec(f"import zoo.{name}")
    moved = __import__(f"zoo.models.{name}", fromlist=["x"])
    assert sys.modules[f"zoo.{name}"] is moved and getattr(zoo, name) is moved, name
    assert moved.__spec__.name == f"zoo.models.{name}"
    assert [str(w.message) for w in caught] == [f"zoo.{name} moved to zoo.models.{name}: import it from there (the old "
                                                "path will be removed)"], name
    assert caught[0].category is DeprecationWarning and caught[0].filename == "<string>", caught[0].filename
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", f"import sys\nMOVED = {sorted(MOVED)!r}\n{code}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=SAFETY_NET_S)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("form", ["from zoo.pde import leapfrog as found",
                                  "from zoo import stiffness as module; found = module.sigma_max",
                                  "import zoo; found = zoo.continuousnet.continuousnet_model"])
def test_each_old_form_of_import_warns_once_and_works(form) -> None:
    code = (f"import warnings\nwarnings.simplefilter('always')\nimport zoo\n"
            f"with warnings.catch_warnings(record=True) as caught:\n    {form}\n"
            "assert callable(found)\nprint(len([w for w in caught if w.category is DeprecationWarning]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=SAFETY_NET_S)
    assert result.returncode == 0 and result.stdout.split() == ["1"], result.stderr[-2000:] + result.stdout
