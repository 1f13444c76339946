"""Synthetic SEG, SR and annotation objects, made with highdicom's own constructors."""

from __future__ import annotations

import copy
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import UID, generate_uid

from hdfsspec.testing.builders import build_native

__all__ = ["build_annotations", "build_ct_series", "build_seg", "build_sr", "segmentation"]


def _save(obj: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    obj.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def build_ct_series(slices: int, rows: int = 64, cols: int = 64, *, seed: int = 0) -> list[bytes]:
    """A series of single-frame CT images (source images for a SEG)."""
    rng = np.random.default_rng(seed)
    blob = build_native(rng.integers(0, 1000, (1, rows, cols), dtype=np.uint16))
    base = pydicom.dcmread(io.BytesIO(blob))
    base.SOPClassUID = base.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
    base.Modality = "CT"
    base.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    base.FrameOfReferenceUID = generate_uid()
    base.PositionReferenceIndicator = ""
    base.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    base.PixelSpacing = [0.5, 0.5]
    base.SliceThickness = 1.0
    base.RescaleIntercept, base.RescaleSlope = -1024, 1
    del base.NumberOfFrames
    out = []
    for k in range(slices):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.InstanceNumber = k + 1
        ds.PixelData = rng.integers(0, 1000, (rows, cols), dtype=np.uint16).tobytes()
        out.append(_save(ds))
    return out


def build_seg(
    slices: int = 8, segments: int = 5, rows: int = 64, cols: int = 64, *, seed: int = 0
) -> tuple[bytes, list[bytes]]:
    """A binary Segmentation of ``segments`` segments over a CT series.

    Each segment is a box over a run of slices (a label map: segments do not
    overlap, later ones win), so memory grows with the voxels, not with voxels
    times segments.

    Returns
    -------
    seg : bytes
        The SEG object.
    sources : list of bytes
        The CT images it segments.
    """
    sources = build_ct_series(slices, rows, cols, seed=seed)
    datasets = [pydicom.dcmread(io.BytesIO(b)) for b in sources]
    rng = np.random.default_rng(seed)
    labels = np.zeros((slices, rows, cols), dtype=np.uint8 if segments < 256 else np.uint16)
    run = max(1, slices // 5)
    for s in range(1, segments + 1):
        z = int(rng.integers(0, max(1, slices - run)))
        r, c = rng.integers(0, rows * 3 // 4), rng.integers(0, cols * 3 // 4)
        labels[z : z + run, r : r + max(1, rows // 5), c : c + max(1, cols // 5)] = s
    return segmentation(datasets, labels, segments), sources


def segmentation(
    sources: Sequence[pydicom.Dataset], pixels: np.ndarray, segments: int, **options: Any
) -> bytes:
    """A Segmentation of ``sources`` with ``segments`` segments, saved.

    ``pixels`` and ``options`` (``segmentation_type``, BINARY by default,
    ``transfer_syntax_uid``, ``omit_empty_frames``, ``max_fractional_value``...) are
    those of :class:`highdicom.seg.Segmentation`.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=f"segment {i + 1}",
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i in range(segments)
    ]
    options.setdefault("segmentation_type", hd.seg.SegmentationTypeValues.BINARY)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="hdfsspec",
        manufacturer_model_name="synthetic",
        software_versions="0",
        device_serial_number="0",
        **options,
    )
    return _save(seg)


def build_sr(text: str = "hello") -> bytes:
    """A Comprehensive SR (no Pixel Data) with one text finding."""
    import highdicom as hd
    from highdicom.sr import CodedConcept, ContainerContentItem, TextContentItem
    from pydicom.sr.codedict import codes

    evidence = pydicom.dcmread(io.BytesIO(build_ct_series(1)[0]))
    root = ContainerContentItem(name=codes.DCM.ImagingMeasurementReport, template_id="1500")
    root.ContentSequence = [  # type: ignore[assignment]
        TextContentItem(
            name=CodedConcept("121071", "DCM", "Finding"),
            value=text,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    ]
    sr = hd.sr.ComprehensiveSR(
        evidence=[evidence],
        content=root,
        series_number=3,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="hdfsspec",
    )
    return _save(sr)


def build_annotations(slide: bytes, points: int = 100, *, seed: int = 0) -> bytes:
    """Microscopy Bulk Simple Annotations: ``points`` points on ``slide``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    source = pydicom.dcmread(io.BytesIO(slide), stop_before_pixels=True)
    rng = np.random.default_rng(seed)
    coords = rng.uniform(
        1, min(source.TotalPixelMatrixRows, source.TotalPixelMatrixColumns) - 1, (points, 1, 2)
    )
    group = hd.ann.AnnotationGroup(
        number=1,
        uid=generate_uid(),
        label="nuclei",
        annotated_property_category=codes.SCT.Tissue,
        annotated_property_type=codes.SCT.Tissue,
        graphic_type=hd.ann.GraphicTypeValues.POINT,
        graphic_data=list(coords),
        algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.MANUAL,
    )
    ann = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[source],
        annotation_coordinate_type=hd.ann.AnnotationCoordinateTypeValues.SCOORD,
        annotation_groups=[group],
        series_instance_uid=generate_uid(),
        series_number=4,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="hdfsspec",
        manufacturer_model_name="synthetic",
        software_versions="0",
        device_serial_number="0",
    )
    return _save(ann)
