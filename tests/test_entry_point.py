"""The ``dicom`` protocol and cache type are registered."""

import subprocess
import sys

import fsspec
from fsspec.caching import caches

import hdfsspec


def test_protocol_resolves_through_entry_point_in_fresh_interpreter():
    code = (
        "import sys, fsspec\n"
        "cls = fsspec.get_filesystem_class('dicom')\n"
        "assert 'hdfsspec' not in sys.modules or cls.__module__ == 'hdfsspec.filesystem'\n"
        "print(cls.__module__, cls.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hdfsspec.filesystem DicomFileSystem"


def test_entry_point_declared():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="fsspec.specs")}
    assert eps["dicom"] == "hdfsspec.filesystem:DicomFileSystem"


def test_cache_registered():
    assert caches["dicom"] is hdfsspec.DicomFrameCache
    assert fsspec.get_filesystem_class("dicom") is hdfsspec.DicomFileSystem
