"""Public test helpers: synthetic DICOM builders, loopback servers, request counting.

Used by hdfsspec's own tests and benchmarks, and available to downstream users
who want to test code that reads DICOM through ``dicom::``.
"""

from hdfsspec.testing.builders import (
    build_encapsulated,
    build_native,
    build_slide,
    fake_jpeg_frames,
    jpeg_tiles,
)
from hdfsspec.testing.counting import CountingFileSystem
from hdfsspec.testing.faults import Fault, FaultPlan
from hdfsspec.testing.objects import build_annotations, build_ct_series, build_seg, build_sr
from hdfsspec.testing.proxy import ShapingProxy
from hdfsspec.testing.pyramid import build_pyramid
from hdfsspec.testing.servers import RangeHTTPServer, RequestLog, moto_s3

__all__ = [
    "CountingFileSystem",
    "Fault",
    "FaultPlan",
    "RangeHTTPServer",
    "RequestLog",
    "ShapingProxy",
    "build_annotations",
    "build_ct_series",
    "build_encapsulated",
    "build_native",
    "build_pyramid",
    "build_seg",
    "build_slide",
    "build_sr",
    "fake_jpeg_frames",
    "jpeg_tiles",
    "moto_s3",
]
