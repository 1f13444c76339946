"""highdicom's SOP-class checks answered from precomputed sets: the same answers, without
loading highdicom's 22 MB module table.

Run as a script, this module prints ``hdfsspec/highdicom/_sop_classes.py`` regenerated
from the installed highdicom (after a highdicom upgrade that changes its tables).
"""

from __future__ import annotations

import subprocess
import sys

import highdicom
import pytest

from hdfsspec.highdicom import _sop_classes as sop_classes


def _answers() -> dict[str, tuple[bool, bool]]:
    """highdicom's own answers, for every SOP class it can answer for."""
    from highdicom import _standard_utils as std

    out = {}
    for uid in sorted(std.get_sop_class_iod_map()):
        try:
            out[uid] = (
                std.does_iod_have_pixel_data(uid),
                std.is_attribute_in_iod("NumberOfFrames", uid),
            )
        except KeyError:  # highdicom's tables lack a module of its IOD: it cannot answer
            continue
    return out


def test_the_sets_hold_highdicoms_own_answers():
    answers = _answers()
    assert set(answers) == sop_classes.KNOWN
    assert {u for u, (pixel, _) in answers.items() if pixel} == sop_classes.PIXEL
    assert {u for u, (_, multi) in answers.items() if multi} == sop_classes.MULTIFRAME


def test_the_checks_highdicom_image_calls_answer_the_same():
    import highdicom.image as hd_image
    from highdicom import _standard_utils as std
    from pydicom import Dataset

    import hdfsspec.highdicom.readers  # noqa: F401  (installs the quick checks)

    for uid, (pixel, multi) in _answers().items():
        ds = Dataset()
        ds.SOPClassUID = uid
        assert hd_image.does_iod_have_pixel_data(uid) is pixel
        assert hd_image.is_multiframe_image(ds) is multi
    unknown = "1.2.3.4.5.6"  # not in the sets: highdicom's own function answers (raises)
    with pytest.raises(KeyError):
        hd_image.does_iod_have_pixel_data(unknown)
    assert std.get_module_attribute_map.cache_info().currsize == 1  # loaded by _answers


def test_a_new_process_reads_an_image_without_loading_the_module_table(tmp_path):
    from hdfsspec.testing import build_slide, jpeg_tiles

    path = tmp_path / "slide.dcm"
    path.write_bytes(build_slide(64, 64, tile=16, tiles=jpeg_tiles(2, 16, 3)))
    code = (
        "import hdfsspec, numpy, highdicom, io\n"
        "from highdicom import _standard_utils as std\n"
        f"im = hdfsspec.imread({str(path)!r})\n"
        "px = im.get_total_pixel_matrix()\n"
        f"ref = highdicom.imread({str(path)!r}).get_total_pixel_matrix()\n"
        "assert numpy.array_equal(px, ref)\n"
        "print(std.get_module_attribute_map.cache_info().currsize)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0"]  # neither hdfsspec's imread nor highdicom's loaded it


def _source() -> str:
    """``hdfsspec/highdicom/_sop_classes.py``, regenerated from the installed highdicom."""
    answers = _answers()
    known = sorted(answers)
    pixel = [u for u in known if answers[u][0]]
    multi = [u for u in known if answers[u][1]]

    def frozen(name: str, doc: str, items: list[str]) -> str:
        body = "".join(f'        "{u}",\n' for u in items)
        return f'{name} = frozenset(\n    {{\n{body}    }}\n)\n"""{doc}"""\n'

    with open(sop_classes.__file__) as f:
        text = f.read()
    head = text[: text.index("KNOWN = frozenset(")]
    head = head.replace(
        head[head.index("from highdicom 0.") :].split(" ")[2], highdicom.__version__, 1
    )
    return (
        head
        + frozen("KNOWN", "The SOP Class UIDs answered here.", known)
        + "\n"
        + frozen(
            "PIXEL",
            "Those whose IOD has Pixel Data, Float Pixel Data or Double Float Pixel Data (not in\n"
            "an icon image): ``does_iod_have_pixel_data``.",
            pixel,
        )
        + "\n"
        + frozen(
            "MULTIFRAME", "Those whose IOD has Number of Frames: ``is_multiframe_image``.", multi
        )
    )


def test_the_module_is_what_the_generator_writes():
    with open(sop_classes.__file__) as f:
        assert f.read() == _source()


if __name__ == "__main__":
    sys.stdout.write(_source())
