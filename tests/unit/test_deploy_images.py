"""Each image's requirement list covers what its service imports.

The chunker and extractor images install the package with --no-deps plus
deploy/requirements/base.txt (no TensorFlow), the classifier image adds
classifier-{cpu,gpu}.txt. This test follows the imports of each service's entry point
through the repo's own modules (module-level imports, and imports inside functions of
the modules reached) and checks every third-party module is provided by the image, so
a new dependency cannot silently break a container at start.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQS = ROOT / "deploy" / "requirements"

# import name -> distribution name (where they differ)
DIST_OF = {"kafka": "kafka-python", "prometheus_client": "prometheus-client", "tensorflow": "tensorflow"}
# imports that only run on optional paths and are allowed to be absent from an image
OPTIONAL = {"tqdm", "matplotlib", "sklearn", "librosa", "essentia", "pytest"}

ENTRY_POINTS = {
    "chunker": ["services/chunker/__main__.py", "shared/cli/__init__.py", "shared/cli/topics.py"],
    "extractor": ["services/extractor/__main__.py"],
    "classifier": ["services/classifier/__main__.py"],
}
IMAGE_REQS = {"chunker": ["base.txt"], "extractor": ["base.txt"], "classifier": ["classifier-cpu.txt", "classifier-gpu.txt"]}


def requirements(name: str) -> set[str]:
    out: set[str] = set()
    for line in (REQS / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            out |= requirements(line[3:].strip())
            continue
        out.add(re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0].lower())
    return out


def local_module_path(mod: str) -> Path | None:
    base = ROOT.joinpath(*mod.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.exists():
            return cand
    return None


def third_party_imports(entries: list[str]) -> dict[str, str]:
    """{top-level third-party module: first file importing it} reachable from entries."""
    seen: set[Path] = set()
    todo = [ROOT / e for e in entries if (ROOT / e).exists()]
    found: dict[str, str] = {}
    stdlib = set(sys.stdlib_module_names)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(), str(path))
        pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parent = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                    names = [base] + [f"{base}.{a.name}" for a in node.names]
                else:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            module_level = node in tree.body or any(node in getattr(b, "body", []) for b in tree.body if isinstance(b, (ast.If, ast.Try)))
            for name in names:
                top = name.split(".")[0]
                if top in ("shared", "services"):
                    p = local_module_path(name)
                    # follow local modules imported at module level; function-level
                    # local imports are followed too (their code runs in the service)
                    if p is not None:
                        todo.append(p)
                elif top and top not in stdlib and top != "__future__":
                    found.setdefault(top, f"{path.relative_to(ROOT)}{'' if module_level else ' (in a function)'}")
    return found


@pytest.mark.parametrize("service", sorted(ENTRY_POINTS))
def test_image_requirements_cover_service_imports(service):
    if not (ROOT / ENTRY_POINTS[service][0]).exists():
        pytest.skip(f"{ENTRY_POINTS[service][0]} not written yet")
    imports = third_party_imports(ENTRY_POINTS[service])
    for reqfile in IMAGE_REQS[service]:
        provided = requirements(reqfile)
        missing = {
            mod: where for mod, where in imports.items()
            if DIST_OF.get(mod, mod).replace("_", "-").lower() not in provided
            and not (mod == "tensorflow" and provided & {"tensorflow", "tensorflow-cpu"})
            and mod not in OPTIONAL
        }
        assert not missing, f"{service} image ({reqfile}) lacks: {missing}"


def test_requirement_versions_follow_pyproject():
    """Every pin in the image lists appears, with the same bounds, in pyproject.toml."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    for f in REQS.glob("*.txt"):
        for line in f.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-r"):
                assert f'"{line}' in pyproject, f"{f.name}: {line} differs from pyproject.toml"
