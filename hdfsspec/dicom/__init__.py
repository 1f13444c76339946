"""The layout of a DICOM object, pure: no fsspec, no I/O beyond a ``fetch(start, stop)`` callable.

The Part 10 header and its element walker (:mod:`~hdfsspec.dicom.walker`,
:mod:`~hdfsspec.dicom.header`, :mod:`~hdfsspec.dicom.parse`), fragment items and how
they make frames (:mod:`~hdfsspec.dicom.fragment_items`,
:mod:`~hdfsspec.dicom.fragments`), the offset tables and the TIFF tile table of dual
DICOM-TIFF files (:mod:`~hdfsspec.dicom.frame_locations`, :mod:`~hdfsspec.dicom.tiff`),
and the :class:`~hdfsspec.dicom.index.FrameIndex` they build.
"""
