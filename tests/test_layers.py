"""The folders are layers: each imports only the ones below it (a static check of imports).

highdicom/        the readers (the only place that imports highdicom)
fsspec face       filesystem, file, sources (and the public API, cli)
cache/            the frame-aware cache
io/               how bytes come from a store
dicom/            the object's layout, pure (no fsspec)
errors, _types, _fork
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import hdfsspec

ROOT = pathlib.Path(hdfsspec.__file__).parent
BASE = {"errors", "_types", "_fork"}
FACE = {"filesystem", "file", "sources"}
RANK = {"base": 0, "dicom": 1, "io": 2, "cache": 3, "face": 4, "highdicom": 5, "top": 6}


def _layer(module: str) -> str:
    """The layer of ``hdfsspec.<module...>``."""
    head = module.split(".")[0]
    if head in BASE:
        return "base"
    if head in FACE:
        return "face"
    if head in ("dicom", "io", "cache", "highdicom"):
        return head
    return "top"  # __init__, cli, highdicom_io (a re-export), testing


def _imports(path: pathlib.Path) -> list[tuple[str, int]]:
    """Modules of hdfsspec and third-party top-level names ``path`` imports, with lines."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "hdfsspec":
                out += [(f"hdfsspec.{a.name}", node.lineno) for a in node.names]
            else:
                out.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return out


MODULES = sorted(p for p in ROOT.rglob("*.py") if "testing" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    own = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    layer = _layer(own) if own != "__init__" else "top"
    for name, line in _imports(path):
        if name.startswith("hdfsspec.") and not name.startswith("hdfsspec.testing"):
            other = _layer(name.removeprefix("hdfsspec."))
            assert RANK[other] <= RANK[layer], (
                f"{own}:{line} imports {name} ({other} above {layer})"
            )
        if layer in ("base", "dicom", "io", "cache", "face"):
            assert name.split(".")[0] != "highdicom", f"{own}:{line} imports highdicom"
        if layer in ("base", "dicom"):
            assert name.split(".")[0] not in ("fsspec", "aiohttp"), f"{own}:{line} imports {name}"


def test_every_folder_says_its_job():
    for folder in ("dicom", "io", "cache", "highdicom"):
        doc = ast.get_docstring(ast.parse((ROOT / folder / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 10, folder


def test_modules_stay_near_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in MODULES
        if (n := len(p.read_text().splitlines())) > 450
    }
    assert not long, long


def test_the_benchmark_harness_imports():
    """benchmarks/ imports internal modules too: a move must not break it unseen."""
    import subprocess
    import sys

    bench = ROOT.parent / "benchmarks"
    if not bench.is_dir():
        pytest.skip("no benchmarks/ beside the package (an installed wheel)")
    code = "import cells, child, data, fresh, run, servers, targets"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=bench, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
