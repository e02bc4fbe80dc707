"""What the package index and an installer see: metadata, extras, licence, README links.

The metadata tests read the installed distribution (tox installs the wheel; a development
install has the same metadata, as of its last ``pip install -e``): they are skipped only
when parabatch runs from a bare source tree with no distribution installed.
"""

from __future__ import annotations

import configparser
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

import parabatch

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
#: Development tools: never in a published extra (tox installs them).
DEV_TOOLS = {"ruff", "mypy", "types-jsonschema", "tox", "pre-commit", "black", "flake8"}


@pytest.fixture(scope="module")
def dist() -> metadata.Distribution:
    try:
        return metadata.distribution("parabatch")
    except metadata.PackageNotFoundError:
        pytest.skip("parabatch is not installed (a bare source tree): no metadata to check")


def _project_table() -> str:
    """The ``[project]`` table of pyproject.toml, as text (no TOML parser before 3.11)."""
    match = re.search(r"^\[project\]\n(.*?)(?=^\[)", PYPROJECT, re.S | re.M)
    assert match, "pyproject.toml has no [project] table"
    return match.group(1)


def test_the_version_is_written_once_and_the_metadata_agrees(dist: metadata.Distribution) -> None:
    project = _project_table()
    assert not re.search(r"^version\s*=", project, re.M), "a second, static version"
    assert re.search(r'^dynamic\s*=\s*\[[^]]*"version"', project, re.M)
    assert 'path = "src/parabatch/__init__.py"' in PYPROJECT  # [tool.hatch.version]
    assert dist.version == parabatch.__version__


def test_the_licence_file_ships_and_matches_the_metadata(dist: metadata.Distribution) -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert dist.metadata["License-Expression"] == "MIT"
    assert dist.metadata.get_all("License-File") == ["LICENSE"]
    shipped = [f for f in dist.files or [] if f.name == "LICENSE"]
    assert shipped and shipped[0].read_text(encoding="utf-8") == text


def test_classifiers_name_pytest_the_status_and_every_python_tox_runs(
    dist: metadata.Distribution,
) -> None:
    classifiers = set(dist.metadata.get_all("Classifier") or [])
    assert "Framework :: Pytest" in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    claimed = {
        c.rsplit(" ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    envs = {e.strip() for e in tox["tox"]["envlist"].replace("\n", ",").split(",")}
    tested = {f"3.{e[3:]}" for e in envs if re.fullmatch(r"py3\d+", e)}
    assert claimed == tested, "every claimed Python has a tox env, and no more"
    lowest = min(claimed, key=lambda v: int(v.split(".")[1]))
    assert dist.metadata["Requires-Python"] == f">={lowest}"


def test_project_urls_are_real_addresses(dist: metadata.Distribution) -> None:
    urls = dict(u.split(", ", 1) for u in dist.metadata.get_all("Project-URL") or [])
    assert urls, "no Project-URL"
    for label, url in urls.items():
        assert url.startswith("https://"), (label, url)
        assert not re.search(r"example\.|your-?(org|name)|todo|xxx", url, re.I), (label, url)


def test_pocketflow_is_bounded_below_its_next_minor(dist: metadata.Distribution) -> None:
    # The core overrides PocketFlow's private Node._exec/_run: a new minor may change them.
    (req,) = [r for r in dist.requires or [] if r.startswith("pocketflow")]
    assert ">=0.0.3" in req and "<0.1" in req, req


def test_no_development_tool_is_a_published_extra(dist: metadata.Distribution) -> None:
    extras = set(dist.metadata.get_all("Provides-Extra") or [])
    assert not extras & {"lint", "type", "dev"}, extras
    in_extras = {
        re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower()
        for r in dist.requires or []
        if "extra ==" in r
    }
    assert not in_extras & DEV_TOOLS, in_extras & DEV_TOOLS
    assert "hypothesis" in extras  # what shrink() names


def test_the_pytest_plugin_is_a_light_top_level_module(dist: metadata.Distribution) -> None:
    (ep,) = [e for e in dist.entry_points if e.group == "pytest11"]
    assert (ep.name, ep.value) == ("parabatch", "_parabatch_pytest")


def test_shrink_names_the_extra_when_hypothesis_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from parabatch.testing import shrink
    from parabatch.testing.broken import NoCopy

    monkeypatch.setitem(sys.modules, "hypothesis", None)  # import hypothesis -> ImportError
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install 'parabatch[hypothesis]'")):
        shrink(NoCopy, budget=1)


@pytest.mark.parametrize("strategy", ["schedules", "scenarios"])
def test_the_hypothesis_strategies_name_the_extra_when_hypothesis_is_missing(
    strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import parabatch.testing

    make = getattr(parabatch.testing, strategy)
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # import hypothesis -> ImportError
    monkeypatch.setitem(sys.modules, "hypothesis.strategies", None)
    expected = f"{strategy}() needs Hypothesis: pip install 'parabatch[hypothesis]'"
    with pytest.raises(ModuleNotFoundError, match=re.escape(expected)) as info:
        make()
    assert info.value.name == "hypothesis"


def test_readme_links_work_on_the_package_index() -> None:
    """The index renders README.md away from the repository: no relative link survives."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    inline = re.findall(r"\]\(([^)\s]+)\)", readme)
    targets = inline + re.findall(r"^\[[^]]+\]:\s*(\S+)", readme, re.M)  # and [x]: url
    relative = [t for t in targets if not re.match(r"https://|#", t)]
    assert not relative, f"links the package index cannot follow: {relative}"
    # The documents the README points to as files ship in the sdist (pyproject's include).
    for doc in sorted(set(re.findall(r"`(docs/[\w.-]+\.md)`", readme))):
        assert (ROOT / doc).is_file(), doc
    assert '"/docs"' in PYPROJECT
