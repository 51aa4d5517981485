"""stages.params: typed sections, clear errors naming file and key, --set overrides."""
from dataclasses import dataclass, field

import pytest

from stages.params import ParamsError, load_section


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    steps: int = 3


@dataclass(frozen=True)
class Section:
    name: str
    sizes: tuple[int, ...] = (1, 2)
    limit: float | None = None
    inner: Inner = field(default_factory=Inner)


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_typed_section_with_overrides(tmp_path):
    p = write(tmp_path, "a:\n  b:\n    name: x\n    inner: {lr: 3e-3}\n")
    s = load_section(p, "a.b", Section, ["sizes=[4, 5]", "inner.steps=7", "limit=2"])
    # YAML 1.1 reads 3e-3 as a string; float fields accept it.
    assert s == Section("x", (4, 5), 2.0, Inner(0.003, 7))


@pytest.mark.parametrize("text,overrides,message", [
    ("a: {b: {name: x, nmae: y}}", [], r"params.yaml:a.b: unknown key\(s\) nmae"),
    ("a: {b: {sizes: [1]}}", [], r"missing key 'name'"),
    ("a: {b: {name: x, inner: {steps: 1.5}}}", [], r"a.b.inner.steps: expected an integer"),
    ("a: {b: {name: x}}", ["inner.lr=fast"], r"a.b.inner.lr: expected a number"),
    ("a: {b: {name: x}}", ["inner.lrr=1"], r"unknown key\(s\) lrr"),
    ("a: {b: {name: x}}", ["oops"], r"expected KEY=VALUE"),
    ("a: {c: {}}", [], r"missing section 'a.b'"),
])
def test_errors_name_the_key(tmp_path, text, overrides, message):
    with pytest.raises(ParamsError, match=message):
        load_section(write(tmp_path, text), "a.b", Section, overrides)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_section(tmp_path / "nope.yaml", "a", Section)
