from __future__ import annotations

import pytest

from parabatch import TemplateError, resolve_template
from parabatch._templates import has_template

CTX = {
    "doc": {"title": "T", "tags": ["a", "b"], "meta": {"n": 3}},
    "n": 2,
    "none": None,
    "flag": True,
    "items": [{"id": 1}, {"id": 2}],
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${n}", 2),
        ("${doc.title}", "T"),
        ("${doc.tags[1]}", "b"),
        ("${doc.tags.0}", "a"),
        ("${items[1].id}", 2),
        ("${items.1.id}", 2),
        ("${doc.tags[-1]}", "b"),
        ("${none}", None),
        ("${doc.meta}", {"n": 3}),
        ("${ n }", 2),
        ("n=${n}, t=${doc.title}", "n=2, t=T"),
        ("${doc.meta} ${flag} ${none}", '{"n": 3} true null'),
        ("plain", "plain"),
        ("$n {n}", "$n {n}"),
    ],
)
def test_resolves(template: str, expected: object) -> None:
    assert resolve_template(template, CTX) == expected


def test_whole_template_keeps_type_and_identity() -> None:
    assert resolve_template("${doc.meta}", CTX) is CTX["doc"]["meta"]


def test_nested_structures() -> None:
    value = {"a": ["${n}", {"b": "x${n}"}], "t": ("${doc.title}",), "k": 5}
    assert resolve_template(value, CTX) == {"a": [2, {"b": "x2"}], "t": ("T",), "k": 5}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${missing}", "${missing}: key 'missing' not found in shared (a dict with keys: doc,"),
        ("${doc.nope}", "${doc.nope}: key 'nope' not found in doc (a dict with keys: title, tags,"),
        ("${doc.tags[5]}", "${doc.tags[5]}: no index 5 in doc['tags'] (a list of length 2)"),
        ("${doc.tags.x}", "no index 'x' in doc['tags']"),
        ("${n.x}", "${n.x}: cannot look up 'x' in n (int 2)"),
        ("${none.x}", "cannot look up 'x' in none (NoneType None)"),
        ("a ${missing} b", "${missing}: key 'missing' not found"),
    ],
)
def test_unresolved_paths_say_where_they_stopped(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        resolve_template(template, CTX)
    assert message in str(info.value)


def test_has_template() -> None:
    assert has_template("${x}") and has_template(["a", {"b": "c ${d}"}])
    assert not has_template("$x") and not has_template(3) and not has_template({"a": "b"})
