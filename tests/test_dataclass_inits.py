"""Every ``__init__`` written out in a dataclass of the compiled modules is the one dataclasses would
generate: same parameters, in field order, with the same defaults, each stored in its own field.

They are written out because mypyc compiles them to plain field stores, while the generated ones stay
interpreted (mypyc/mypyc#817). The tests run on the sources, where a wrong one would otherwise only show
as a compiled run that differs from a pure one.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest

from tests.compile_list import compiled_module_names


def _written_out() -> list[type]:
    """Dataclasses of the compiled modules whose ``__init__`` is in their module's source file (the
    generated ones come from ``exec`` and have no file)."""
    found = []
    for name in compiled_module_names():
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if (
                inspect.isclass(cls)
                and cls.__module__ == name
                and dataclasses.is_dataclass(cls)
                and Path(inspect.getsourcefile(cls.__init__) or "<string>") == Path(module.__file__ or "")
            ):
                found.append(cls)
    return found


SOURCES = all(str(importlib.import_module(n).__file__).endswith(".py") for n in compiled_module_names())
WRITTEN_OUT = _written_out() if SOURCES else []
pytestmark = pytest.mark.skipif(
    not SOURCES, reason="reads the sources (an editable install); test_compiled.py checks the compiled build"
)


def test_the_hot_per_tick_classes_have_their_init_written_out() -> None:
    names = {cls.__name__ for cls in WRITTEN_OUT}
    assert {"Replica", "ObservedReplica", "DesiredReplica", "GpuUsage", "Site", "Current"} <= names


@pytest.mark.parametrize("cls", WRITTEN_OUT, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_a_written_out_init_takes_the_fields_in_order_with_their_defaults(cls: type) -> None:
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params] == [f.name for f in fields]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
    for param, f in zip(params, fields, strict=True):
        assert f.default_factory is dataclasses.MISSING, f"{f.name}: a default factory is not written out"
        expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert param.default == expected, f.name


@pytest.mark.parametrize("cls", WRITTEN_OUT, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_a_written_out_init_stores_each_argument_in_its_own_field(cls: type) -> None:
    values = {f.name: object() for f in dataclasses.fields(cls)}  # distinct, so a swap shows
    instance = cls(**values)
    assert {name: getattr(instance, name) for name in values} == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, next(iter(values)), None)
