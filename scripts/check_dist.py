"""Check the built sdist and wheel hold what the package index and a user need.

    python scripts/check_dist.py DIST_DIR

``tox -e pkg`` builds both into its own folder and runs this (and ``twine check``). It
checks: the wheel holds the package, the top-level pytest plugin and the licence, and its
metadata's version is ``parabatch.__version__`` as written in the source; the sdist holds
the README's guides (``docs/*.md``), the licence, the tests and ``tox.ini``. Exits 1 naming
every problem.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def source_version() -> str:
    text = (ROOT / "src" / "parabatch" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if not match:
        raise SystemExit("src/parabatch/__init__.py has no __version__ line")
    return match.group(1)


def check_wheel(path: Path, version: str) -> list[str]:
    problems = []
    with zipfile.ZipFile(path) as whl:
        names = set(whl.namelist())
        info = f"parabatch-{version}.dist-info"
        for need in (
            "parabatch/__init__.py",
            "parabatch/py.typed",
            "parabatch/testing/pytest_plugin.py",
            "_parabatch_pytest.py",
            f"{info}/licenses/LICENSE",
            f"{info}/entry_points.txt",
        ):
            if need not in names:
                problems.append(f"{path.name}: no {need}")
        if f"{info}/METADATA" in names:
            meta = Parser().parsestr(whl.read(f"{info}/METADATA").decode())
            if meta["Version"] != version:
                problems.append(f"{path.name}: Version {meta['Version']} != {version}")
        else:
            problems.append(f"{path.name}: no {info}/METADATA")
        stray = sorted(n for n in names if n.split("/")[0] in {"tests", "docs", "stress"})
        if stray:
            problems.append(f"{path.name}: development files in the wheel: {stray[:3]}")
    return problems


def check_sdist(path: Path, version: str) -> list[str]:
    problems = []
    top = f"parabatch-{version}"
    with tarfile.open(path) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    docs = sorted(set(re.findall(r"`(docs/[\w.-]+\.md)`", readme)))
    if not docs:
        problems.append("README.md names no docs/*.md")
    for need in [*docs, "LICENSE", "README.md", "pyproject.toml", "tox.ini", "tests/conftest.py"]:
        if need not in names:
            problems.append(f"{path.name}: no {top}/{need}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    dist = Path(argv[0])
    version = source_version()
    wheels = sorted(dist.glob("parabatch-*.whl"))
    sdists = sorted(dist.glob("parabatch-*.tar.gz"))
    problems = [] if wheels and sdists else [f"{dist}: expected one wheel and one sdist"]
    for wheel in wheels:
        problems += check_wheel(wheel, version)
    for sdist in sdists:
        problems += check_sdist(sdist, version)
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_dist: {', '.join(p.name for p in [*wheels, *sdists])}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
