"""The format registry and the DatasetFormat contract.

Every registered format module has every member of the protocol with the
protocol's call signature, the registry knows exactly the four datasets, and a
format module is imported only when asked for (a stage's code must not depend
on another dataset's format module).
"""
import inspect
import json
import subprocess
import sys
from collections.abc import Sequence
from typing import get_args, get_origin, get_type_hints

import pytest

from nasseg.data import DATASETS, DataError
from nasseg.data.formats import FORMATS, get_format
from nasseg.data.formats.base import DatasetFormat

from conftest import ROOT

METHODS = sorted(name for name, value in vars(DatasetFormat).items()
                 if inspect.isfunction(value) and not name.startswith("_"))
CONSTANTS = get_type_hints(DatasetFormat)


def test_protocol_members():
    assert METHODS == ["check_layout", "plan", "write_synthetic"]
    assert sorted(CONSTANTS) == ["LAYOUT", "REQUIRED"]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_format_fulfils_the_protocol(name):
    module = get_format(name)
    assert module.__name__ == FORMATS[name]
    assert isinstance(module, DatasetFormat)
    for member in METHODS:
        want, got = getattr(DatasetFormat, member), getattr(module, member)
        params = list(inspect.signature(want).parameters.values())[1:]  # without self
        assert [(p.name, p.kind, p.default) for p in inspect.signature(got).parameters.values()] \
            == [(p.name, p.kind, p.default) for p in params], f"{name}.{member}"
        assert get_type_hints(got) == get_type_hints(want), f"{name}.{member}"
    for member, hint in CONSTANTS.items():
        value = getattr(module, member)
        if get_origin(hint) is Sequence:
            assert isinstance(value, Sequence) and value, f"{name}.{member}"
            assert all(isinstance(v, get_args(hint)[0]) for v in value), f"{name}.{member}"
        else:
            assert isinstance(value, hint), f"{name}.{member}"


def test_registry_knows_the_datasets():
    assert tuple(FORMATS) == DATASETS
    with pytest.raises(DataError, match="unknown dataset 'kitti'; expected one of voc, nyud, "
                                        "cityscapes, camvid"):
        get_format("kitti")


def test_format_modules_are_imported_on_demand():
    code = """if True:
        import json, sys
        import nasseg.data, nasseg.data.prepare, nasseg.data.synthesize
        import stages.prepare, stages.synthesize
        from nasseg.data.formats import FORMATS, get_format
        loaded = lambda: sorted(n for n, m in FORMATS.items() if m in sys.modules)
        before = loaded()
        get_format("cityscapes")
        print(json.dumps([before, loaded()]))
    """
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [[], ["cityscapes"]]
