"""The folders are layers: each imports only the ones below it (a static check of imports).

highdicom/        the readers (the only place that imports highdicom; its private names
                  only in highdicom/_adapter.py)
fsspec face       filesystem, file, sources, chain, fileobj (and the public API, cli)
cache/            the frame-aware cache
io/               how bytes come from a store
dicom/            the object's layout, pure (no fsspec)
errors, _types, _fork, _log (the logger hierarchy)
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import pathlib

import pytest

import hdfsspec

ROOT = pathlib.Path(hdfsspec.__file__).parent
BASE = {"errors", "_types", "_fork", "_log"}
FACE = {"filesystem", "file", "sources", "chain", "fileobj", "unchecked", "opening"}
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


ADAPTER = ROOT / "highdicom" / "_adapter.py"


def _private(name: str) -> bool:
    dunder = name.startswith("__") and name.endswith("__")
    return name.startswith("_") and name != "_" and not dunder


def _defined(body: list[ast.stmt], names: set[str]) -> None:
    """Names a module or class body defines (functions, classes, assignments), recursively
    through classes and module-level ``if``/``try`` (not function locals)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            _defined(node.body, names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.If, ast.Try)):
            _defined(node.body + node.orelse, names)


@functools.cache
def highdicom_private_names() -> frozenset[str]:
    """Every private name of the installed highdicom, from its source: the attributes its
    classes set or read on ``self`` / ``cls``, the methods, classes, functions and
    variables its classes and modules define (its tests left out)."""
    spec = importlib.util.find_spec("highdicom")
    assert spec is not None and spec.origin is not None
    root = pathlib.Path(spec.origin).parent
    names: set[str] = set()
    for path in root.rglob("*.py"):
        if "tests" in path.relative_to(root).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        _defined(tree.body, names)
        names.update(
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        )
    return frozenset(filter(_private, names))


def private_uses(source: str) -> list[tuple[str, int]]:
    """highdicom's private names ``source`` uses, with lines: an attribute (``x._fp``), a
    method of a class (an override, or a clash with one of highdicom's), a string
    (``getattr(x, "_fp")``) or an import of one (``from highdicom.io import _get_bot``)."""
    names = highdicom_private_names()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in names:
            found.append((node.attr, node.lineno))
        elif isinstance(node, ast.ClassDef):
            found += [
                (item.name, item.lineno)
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name in names
            ]
        elif isinstance(node, ast.Constant) and node.value in names:
            found.append((node.value, node.lineno))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("highdicom"):
            parts = [*(node.module or "").split("."), *(a.name for a in node.names)]
            found += [(part, node.lineno) for part in parts if _private(part)]
        elif isinstance(node, ast.Import):
            found += [
                (a.name, node.lineno)
                for a in node.names
                if a.name.startswith("highdicom") and any(map(_private, a.name.split(".")))
            ]
    return found


def _near_highdicom(path: pathlib.Path) -> bool:
    """Whether a module imports highdicom or hdfsspec's highdicom layer (and so may hold
    highdicom objects)."""
    return any(
        name.split(".")[0] == "highdicom" or name.startswith("hdfsspec.highdicom")
        for name, _ in _imports(path)
    )


NEAR_HIGHDICOM = sorted(p for p in ROOT.rglob("*.py") if p != ADAPTER and _near_highdicom(p))


@pytest.mark.parametrize("path", NEAR_HIGHDICOM, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_adapter_touches_highdicom_private_names(path):
    uses = private_uses(path.read_text())
    assert not uses, f"{path.relative_to(ROOT)}: highdicom's {uses} (to highdicom/_adapter.py)"


def test_the_private_name_check_finds_the_adapter_s_and_they_exist_in_this_highdicom():
    """The check above can fail: it finds in the adapter each private name of highdicom
    the adapter relies on, which so also exist in the installed highdicom (a rename in a
    new release fails here)."""
    assert len(NEAR_HIGHDICOM) >= 4  # readers, frame_reader, cli, testing/objects ...
    found = {name for name, _ in private_uses(ADAPTER.read_text())}
    relied_on = {
        # highdicom.io.ImageFileReader: its state, given, and the methods overridden
        "_filename", "_should_close", "_file_meta", "_metadata", "_pixel_keyword",
        "_color_manager", "_enter_depth", "_read_metadata",
        "_pixel_data_offset", "_first_frame_offset", "_offset_table",
        # highdicom.Image and Segmentation: the seams, and what readers ask of them
        "_db_con", "_get_pixels_by_frame", "_get_pixels_by_seg_frame",
        "_standardize_frame_index", "_serialize_db", "_file_reader", "_create_frame_lut",
        "_standardize_lut_value",
    }  # fmt: skip
    assert relied_on <= found, relied_on - found
    assert private_uses("import highdicom._module_utils\nfrom highdicom.io import _get_bot\n")
    assert private_uses("class R:\n    def _read_metadata(self): ...\nr._fp = 1\n")
