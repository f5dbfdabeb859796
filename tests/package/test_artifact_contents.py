"""What `sam build` puts in the zip: the function and the modules it imports, compiled, and nothing Lambda never
reads (src/Makefile removes the rest). Checked on the built directory, which is what SAM zips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kickout_dev.build import ROOT, Tools
from tests.package.conftest import Built

pytestmark = pytest.mark.package

# Packages that exist only for type checkers, console scripts, the dependencies' own tests, C sources.
UNUSED = [
    re.compile(r"bin(/|$)"),
    re.compile(r"[^/]+-stubs(/|$)"),
    re.compile(r"(.+/)?tests?(/|$)"),
    re.compile(r"(.+/)?(test_[^/]*|[^/]*_test)\.py$"),
    re.compile(r".+\.(pyi|c|h)$"),
    re.compile(r"(.+/)?py\.typed$"),
    re.compile(r"boto3/examples(/|$)"),
]


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def installed_versions(artifact: Path) -> dict[str, str]:
    """Each distribution installed in the artifact (normalized name) with its version, from its .dist-info."""
    distributions = (path.name.removesuffix(".dist-info").rsplit("-", 1) for path in artifact.glob("*.dist-info"))
    return {normalized(name): version for name, version in distributions}


def shipped(artifact: Path) -> list[str]:
    return sorted(path.relative_to(artifact).as_posix() for path in artifact.rglob("*"))


def test_the_artifact_holds_no_stubs_scripts_or_tests_of_dependencies(artifact: Path) -> None:
    # GIVEN every path of the built function
    paths = shipped(artifact)
    assert "handler/app.py" in paths
    # THEN none is of a kind Lambda never reads
    unused = [path for path in paths if any(pattern.match(path) for pattern in UNUSED)]
    assert unused == []


def test_every_shipped_bytecode_file_is_of_a_shipped_source_file(artifact: Path) -> None:
    # GIVEN every .pyc of the artifact
    compiled = list(artifact.rglob("__pycache__/*.pyc"))
    assert compiled
    # THEN each compiles a .py that is shipped beside it (none is left from a file removed after compiling)
    orphans = [
        path.relative_to(artifact).as_posix()
        for path in compiled
        if not (path.parent.parent / f"{path.name.split('.', 1)[0]}.py").is_file()
    ]
    assert orphans == []
    # AND every shipped .py has its bytecode (checked in use by test_built_artifact.py)
    uncompiled = [
        path.relative_to(artifact).as_posix()
        for path in artifact.rglob("*.py")
        if not any((path.parent / "__pycache__").glob(f"{path.stem}.cpython-313*.pyc"))
    ]
    assert uncompiled == []


def test_the_handler_and_its_pinned_dependencies_are_shipped(artifact: Path) -> None:
    # GIVEN src/requirements.txt's pins
    requirements = Path(__file__).resolve().parents[2] / "src" / "requirements.txt"
    pins = dict(
        re.findall(r"^([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)", requirements.read_text(encoding="utf-8"), re.MULTILINE)
    )
    assert "boto3" in pins
    # THEN each is installed at that version (boto3 too: the runtime's copy is not the one the code is tested with)
    installed = installed_versions(artifact)
    for name, version in pins.items():
        assert installed.get(normalized(name)) == version, name


def test_a_build_installs_exactly_the_wheelhouse_with_every_package_index_unreachable(
    built: Built, tools: Tools
) -> None:
    # GIVEN the wheelhouse for this machine's architecture (`make wheels`: src/requirements.txt and what it pulls in)
    wheels = {
        (normalized(name), version)
        for name, version, *_ in (path.name.split("-") for path in (ROOT / ".wheelhouse" / tools.arch).glob("*.whl"))
    }
    assert "aws-lambda-powertools" in dict(wheels)
    # WHEN `make build` ran with pip's indexes pointed at a closed port (the session's build)
    # THEN it installed every wheel of the wheelhouse, and nothing else
    assert set(installed_versions(built.artifact).items()) == wheels


def test_a_build_leaves_nothing_outside_its_build_directory(built: Built) -> None:
    # GIVEN `make build` into a directory of its own, in a checkout with samconfig.toml's `cached = true`
    # THEN SAM's build.toml is not left beside that directory, nor its cache and deps folders in the checkout
    assert built.beside == []
    assert built.left_in_repository == set()
