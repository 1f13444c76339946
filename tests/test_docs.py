"""Every Python snippet of README.md and docs/*.rst runs, against S3 and GCS emulators.

The snippets run as written: no text is substituted. Their buckets (``my-bucket``, and
``idc-open-data`` for highdicom's examples in ``docs/remote.rst``) are made in the moto
S3 server and the GCS emulator on loopback, holding synthetic DICOM objects under the
names the snippets use, and fsspec's configuration (``fsspec.config.conf``, the
documented defaults of every filesystem of a protocol: what ``FSSPEC_S3_ENDPOINT_URL``
sets) points ``s3`` and ``gcs`` at the emulators. AWS credentials are taken out of the
environment meanwhile, so a snippet whose ``{"anon": True}`` got lost on the way fails.
Local paths (``slide.dcm``) are files of the snippet's working directory.

What the snippets read is checked: every ``get_total_pixel_matrix``, ``get_volume``,
``get_pixels_by_source_instance`` and ``read_frames`` they call is compared with
highdicom or pydicom reading a local copy, and its requests and bytes (the ``frames``
phase of the file's ``stats``) with its ``plan()`` made just before.

A snippet that cannot run (one that needs real data) must be preceded by the marker
``<!-- docs-test: not run (the reason) -->`` in Markdown, or the comment
``.. docs-test: not run (the reason)`` in reStructuredText; :data:`NOT_RUN` counts them,
so that none is left out silently.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import BUCKET, _gcs_options, _s3_options

import hdfsspec
from hdfsspec.file import DicomFile
from hdfsspec.filesystem import DICOM_OPTIONS
from hdfsspec.highdicom.readers import DicomImage, DicomSegmentation
from hdfsspec.testing import build_ct_series, build_pyramid, build_seg, build_slide
from hdfsspec.testing.fuzz import reference_frames

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst"))]

NOT_RUN = 0
"""Python snippets marked as not run (each marker gives its reason)."""

PENDING_OPTIONS: set[str] = set()
"""Options not in the tables yet: their feature is being documented with it. The test
fails once one is documented, so that it leaves this set."""

PENDING_ERRORS: set[str] = set()
"""Errors of APIs whose documentation comes with them (as :data:`PENDING_OPTIONS`)."""

STRUCTURAL = {"target_protocol", "target_options", "fs", "fo", "skip_instance_cache"}
"""Parameters of the ``dicom`` filesystem that are not read options."""

DEV_EXTRAS = {"test", "bench", "lint", "docs", "demo"}

PENDING_EXTRAS: set[str] = set()
"""Extras of APIs whose documentation comes with them (as :data:`PENDING_OPTIONS`)."""

MARKDOWN_MARK = re.compile(r"<!--\s*docs-test:\s*not run\s*\((?P<why>[^)]+)\)\s*-->\s*$")
RST_MARK = re.compile(r"^\.\.\s+docs-test:\s*not run\s*\((?P<why>[^)]+)\)\s*$")
PYTHONISH = re.compile(r"^\s*(import |from \w+ import |\w+ = |with |print\()", re.MULTILINE)


# -- the snippets ------------------------------------------------------------------------
@dataclass(frozen=True)
class Snippet:
    """A code block of a document."""

    path: Path
    line: int  # of its first line of code, 1-based
    language: str
    code: str
    not_run: str | None  # the marker's reason

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


def markdown_snippets(path: Path) -> list[Snippet]:
    lines = path.read_text().splitlines()
    out, k = [], 0
    while k < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[k])
        if fence is None:
            k += 1
            continue
        end = next(j for j in range(k + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(k - 1, -1, -1) if lines[j].strip()), "")
        mark = MARKDOWN_MARK.match(before.strip())
        code = "\n".join(lines[k + 1 : end]) + "\n"
        out.append(Snippet(path, k + 2, fence.group(1), code, mark and mark.group("why")))
        k = end + 1
    return out


def rst_snippets(path: Path) -> list[Snippet]:
    lines = path.read_text().splitlines()
    out = []
    for k, line in enumerate(lines):
        directive = re.match(r"^\s*\.\. (?:code-block|code|sourcecode)::\s*(\S*)", line)
        literal = not directive and line.rstrip().endswith("::") and not line.lstrip()[:3] == ".. "
        if not directive and not literal:
            continue
        indent = len(line) - len(line.lstrip())
        body_start = k + 1
        while body_start < len(lines) and (
            not lines[body_start].strip() or lines[body_start].lstrip().startswith(":")
        ):
            body_start += 1
        body = []
        for j in range(body_start, len(lines)):
            text = lines[j]
            if text.strip() and len(text) - len(text.lstrip()) <= indent:
                break
            body.append(text)
        if not body:
            continue
        code = _dedent(body)
        before = next((lines[j] for j in range(k - 1, -1, -1) if lines[j].strip()), "")
        mark = RST_MARK.match(before.strip())
        language = directive.group(1) if directive else ""
        out.append(Snippet(path, body_start + 1, language, code, mark and mark.group("why")))
    return out


def _dedent(body: list[str]) -> str:
    while body and not body[-1].strip():
        body.pop()
    margin = min(len(t) - len(t.lstrip()) for t in body if t.strip())
    return "\n".join(t[margin:] for t in body) + "\n"


def all_snippets() -> list[Snippet]:
    out = []
    for path in DOCUMENTS:
        out += markdown_snippets(path) if path.suffix == ".md" else rst_snippets(path)
    return out


SNIPPETS = all_snippets()
PYTHON = [s for s in SNIPPETS if s.language == "python"]


def test_every_code_block_says_its_language_and_python_ones_are_found():
    unnamed = [s.name for s in SNIPPETS if not s.language and PYTHONISH.search(s.code)]
    assert unnamed == [], "Python in a block without a language: it would not be run"
    assert len(PYTHON) >= 12  # README, quick start, remote, options
    assert {s.path.name for s in PYTHON} >= {"README.md", "quickstart.rst", "remote.rst"}
    assert {s.language for s in SNIPPETS} <= {"python", "bash", "text", "console", ""}


def test_snippets_not_run_are_marked_and_counted():
    marked = [s for s in SNIPPETS if s.not_run is not None]
    assert all(s.language == "python" for s in marked)
    assert all(s.not_run.strip() for s in marked)
    assert len(marked) == NOT_RUN, [s.name for s in marked]
    texts = "\n".join(p.read_text() for p in DOCUMENTS)
    markers = len(re.findall(r"docs-test:\s*not run", texts))
    assert markers == NOT_RUN  # no marker that fails to mark a block


# -- the objects the snippets read ----------------------------------------------------------
IDC_SLIDE = "763fe058-7d25-4ba7-9b29-fd3d6c41dc4b/210f0529-c767-4795-9acf-bad2f4877427.dcm"
IDC_SEG = "3f38511f-fd09-4e2f-89ba-bc0845fe0005/c8ea3be0-15d7-4a04-842d-00b183f53b56.dcm"


def _smooth_tiles(count: int, size: int) -> list[bytes]:
    """Smooth JPEG tiles (a few tens of KB at 1024 px): a slide of 15,600 x 17,600 pixels
    stays a few MB."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    tiles = []
    for k in range(count):
        plane = ((xx + yy) * 150 // (2 * size) + 30 * k).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(np.stack([plane, plane[::-1], 255 - plane], -1)).save(
            out, format="JPEG", quality=80
        )
        data = out.getvalue()
        tiles.append(data + b"\x00" * (len(data) % 2))
    return tiles


def _liver_seg() -> bytes:
    """A binary Segmentation whose second segment is the liver (label and property)."""
    blob, _ = build_seg(slices=12, segments=4, rows=64, cols=64, seed=4)
    ds = pydicom.dcmread(io.BytesIO(blob))
    item = ds.SegmentSequence[1]
    item.SegmentLabel = "Liver"
    code = item.SegmentedPropertyTypeCodeSequence[0]
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "10200004", "SCT", "Liver"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def objects() -> dict[str, bytes]:
    """The objects of the snippets, by key in both buckets."""
    tiles = _smooth_tiles(4, 1024)
    slide = build_slide(15600, 17600, tile=1024, tiles=tiles, offset_table="bot")
    idc = build_slide(15600, 17600, tile=1024, tiles=tiles, offset_table="empty", dual_tiff=True)
    small = build_slide(512, 512, tile=256, tiles=_smooth_tiles(2, 256), offset_table="bot")
    seg = _liver_seg()
    pyramid = build_pyramid(4096, 3072, levels=3, tile=256)
    series = {f"my-bucket/study/series/{name}": blob for name, blob in pyramid.items()}
    ct = build_ct_series(6, 32, 32, seed=5)
    series |= {f"my-bucket/study/ct-series/{k}.dcm": blob for k, blob in enumerate(ct)}
    return series | {
        "my-bucket/slide.dcm": slide,
        "my-bucket/small.dcm": small,
        "my-bucket/ct-seg.dcm": seg,
        "my-bucket/study/a.dcm": small,
        "my-bucket/study/b.dcm": slide,
        "my-bucket/notes.txt": b"not a DICOM object\n",
        f"idc-open-data/{IDC_SLIDE}": idc,
        f"idc-open-data/{IDC_SEG}": seg,
    }


@pytest.fixture(scope="module")
def stores(s3_endpoint, gcs_endpoint, objects) -> dict[str, str]:
    """Both emulators, holding the objects; their endpoints by protocol."""
    s3 = fsspec.filesystem("s3", **_s3_options(s3_endpoint))
    gcs = fsspec.filesystem("gcs", **_gcs_options(gcs_endpoint))
    for fs in (s3, gcs):
        public = {"acl": "public-read"} if fs is s3 else {}  # as the IDC's: read anonymously
        for bucket in ("my-bucket", "idc-open-data"):
            if not fs.exists(bucket):
                fs.mkdir(bucket, **public)
        for key, blob in objects.items():
            fs.pipe_file(key, blob, **({"ACL": "public-read"} if fs is s3 else {}))
        fs.invalidate_cache()
    assert BUCKET not in objects  # the suite's own bucket is left alone
    return {"s3": s3_endpoint, "gcs": gcs_endpoint}


# -- what the snippets read, checked ------------------------------------------------------
@dataclass
class Call:
    method: str
    uid: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any
    planned: tuple[int, int] | None  # (requests, bytes) of the plan
    fetched: tuple[int, int] | None  # (requests, bytes) of the frames phase meanwhile


class Recorder:
    """Wraps the pixel calls of hdfsspec's objects: each call is planned first, then
    recorded with its result and what it fetched (calls made inside a call are not)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[Call] = []
        self._inside = threading.local()
        for cls, name in (
            (DicomImage, "get_total_pixel_matrix"),
            (DicomSegmentation, "get_volume"),
            (DicomSegmentation, "get_pixels_by_source_instance"),
            (DicomFile, "read_frames"),
        ):
            monkeypatch.setattr(cls, name, self._wrap(getattr(cls, name), name))

    def _wrap(self, original: Any, name: str) -> Any:
        recorder = self

        def call(obj: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(recorder._inside, "busy", False):
                return original(obj, *args, **kwargs)
            file = obj if isinstance(obj, DicomFile) else obj.file
            recorder._inside.busy = True  # plan() calls the method itself: not recorded
            try:
                if isinstance(obj, DicomFile):
                    plan = obj.plan(*args, **kwargs)
                else:
                    plan = obj.plan(name, *args, **kwargs)
                before = _frames_phase(file)
                result = original(obj, *args, **kwargs)
                after = _frames_phase(file)
            finally:
                recorder._inside.busy = False
            assert plan.unknown == (), f"{name}: frames of unknown place in a table file"
            fetched = None
            if before is not None and after is not None:
                fetched = (after[0] - before[0], after[1] - before[1])
            uid = str(
                obj.header.dataset.SOPInstanceUID
                if isinstance(obj, DicomFile)
                else obj.SOPInstanceUID
            )
            recorder.calls.append(
                Call(name, uid, args, kwargs, result, (plan.requests, plan.nbytes), fetched)
            )
            return result

        return call


def _frames_phase(file: DicomFile | None) -> tuple[int, int] | None:
    if file is None:
        return None
    phase = file.stats.phases["frames"]
    return phase.requests, phase.bytes


def _expected(call: Call, blob: bytes) -> Any:
    if call.method == "read_frames":
        frames = reference_frames(blob)
        (numbers,) = call.args
        return [frames[k] for k in numbers]
    if call.method == "get_total_pixel_matrix":
        return hd.imread(io.BytesIO(blob)).get_total_pixel_matrix(*call.args, **call.kwargs)
    seg = hd.seg.segread(io.BytesIO(blob))
    return getattr(seg, call.method)(*call.args, **call.kwargs)


def check(calls: list[Call], objects: dict[str, bytes]) -> None:
    by_uid = {str(pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID): b for b in _dicom(objects)}
    for call in calls:
        expected = _expected(call, by_uid[call.uid])
        got = call.result
        if isinstance(got, hd.Volume):
            assert np.array_equal(got.array, expected.array), call.method
            assert np.allclose(got.affine, expected.affine)
        elif isinstance(got, list):
            assert got == expected, call.method
        else:
            assert np.array_equal(got, expected), call.method
        if call.fetched is not None:  # a lazy object: it fetched what it planned
            assert call.fetched == call.planned, (call.method, call.kwargs)


def _dicom(objects: dict[str, bytes]) -> list[bytes]:
    return [b for b in objects.values() if b[128:132] == b"DICM"]


# -- running them ---------------------------------------------------------------------------
@pytest.fixture
def sandbox(stores, objects, tmp_path, monkeypatch) -> Recorder:
    """Endpoints by fsspec's configuration, no AWS credentials, a working directory with
    ``slide.dcm``; the pixel calls recorded."""
    conf = fsspec.config.conf
    monkeypatch.setitem(conf, "s3", {**conf.get("s3", {}), "endpoint_url": stores["s3"]})
    monkeypatch.setitem(conf, "gcs", {**conf.get("gcs", {}), "endpoint_url": stores["gcs"]})
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    (tmp_path / "slide.dcm").write_bytes(objects["my-bucket/slide.dcm"])
    monkeypatch.chdir(tmp_path)
    # a snippet may configure logging (the README's Logging section): undone after it
    for name in ("", "hdfsspec"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logger.level)
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    return Recorder(monkeypatch)


@pytest.mark.parametrize("snippet", [s for s in PYTHON if s.not_run is None], ids=lambda s: s.name)
def test_snippet_runs_and_reads_what_it_says(snippet, sandbox, objects):
    code = compile(snippet.code, snippet.name, "exec")
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    exec(code, namespace)
    for value in namespace.values():  # what the snippet left open
        if isinstance(value, (DicomImage, DicomSegmentation, DicomFile)):
            value.close()
    called = {c.method for c in sandbox.calls}
    for method in ("get_total_pixel_matrix", "get_volume", "read_frames"):
        if f".{method}(" in snippet.code:  # the snippet's calls were checked
            assert method in called, method
    check(sandbox.calls, objects)


# -- what the pages say -------------------------------------------------------------------------
def _readme_options() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Options") : text.index("\n## ", text.index("## Options") + 3)]
    rows = re.findall(r"^\| `([^`]+)`(?:, `([^`]+)`)? \| ([^|]+) \|", section, re.MULTILINE)
    out = {}
    for first, second, default in rows:
        for name in (first, second):
            if name:
                out[name] = _plain(default)
    return out


def _docs_options() -> dict[str, str]:
    text = (ROOT / "docs" / "options.rst").read_text()
    rows = re.findall(r"^   \* - ``([^`]+)``(?:, ``([^`]+)``)?\n     - (.+)$", text, re.MULTILINE)
    out = {}
    for first, second, default in rows:
        for name in (first, second):
            if name:
                out[name] = _plain(default)
    return out


def _plain(text: str) -> str:
    return re.sub(r"`+", "", text).strip()


def test_the_options_tables_agree_and_cover_every_option():
    readme, docs = _readme_options(), _docs_options()
    assert readme == docs  # same options, same defaults
    options = set(DICOM_OPTIONS) - STRUCTURAL
    read_policy = set(hdfsspec.ReadOptions.__dataclass_fields__)
    assert read_policy <= options
    assert set(readme) <= options, "an option documented that the dicom layer does not take"
    assert options - set(readme) == PENDING_OPTIONS & options
    assert not PENDING_OPTIONS & set(readme), "documented now: take it out of PENDING_OPTIONS"


def test_every_error_is_documented():
    readme = (ROOT / "README.md").read_text()
    errors = readme[readme.index("## Errors") : readme.index("## Performance")]
    docs = (ROOT / "docs" / "options.rst").read_text()
    for name in set(hdfsspec.errors.__all__) - PENDING_ERRORS:
        assert f"`{name}`" in errors or f"`hdfsspec.{name}`" in errors, name
        assert f"hdfsspec.errors.{name}`" in docs, name
        assert getattr(hdfsspec, name) is getattr(hdfsspec.errors, name)
    for name in PENDING_ERRORS & set(hdfsspec.errors.__all__):
        assert f"`{name}`" not in errors, "documented now: take it out of PENDING_ERRORS"


def test_the_install_section_names_every_extra():
    pyproject = (ROOT / "pyproject.toml").read_text()
    table = pyproject[pyproject.index("[project.optional-dependencies]") :]
    table = table[: table.index("\n[", 1)]
    extras = re.findall(r"^([A-Za-z][\w-]*) = ", table, re.MULTILINE)
    assert {"s3", "gcs", "test"} <= set(extras)
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Install")
    install = readme[start : readme.index("\n## ", start + 3)]
    for extra in set(extras) - DEV_EXTRAS - PENDING_EXTRAS:
        assert f'"hdfsspec[{extra}]"' in install, extra
    for extra in PENDING_EXTRAS:
        assert f"hdfsspec[{extra}]" not in install, "named now: take it out of PENDING_EXTRAS"


def test_rows_and_columns_count_from_1_everywhere():
    """highdicom refuses ``row_start=0``: no page or docstring shows it."""
    texts = [*DOCUMENTS, *sorted((ROOT / "hdfsspec").rglob("*.py"))]
    zero = re.compile(r"\b(row|column)_start=0\b|[\"'](row|column)_start[\"']:\s*0\b")
    found = [f"{p.name}: {m.group(0)}" for p in texts for m in zero.finditer(p.read_text())]
    assert found == []
