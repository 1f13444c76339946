"""highdicom objects over ``dicom::`` files: the only part of hdfsspec that imports highdicom.

:mod:`~hdfsspec.highdicom.readers` returns ``Image``, ``Segmentation``, SR and
annotation objects whose pixel calls fetch their frames in batches;
:mod:`~hdfsspec.highdicom.frame_reader` serves highdicom's ``ImageFileReader`` from a
:class:`~hdfsspec.file.DicomFile`. highdicom's private names are used in
:mod:`~hdfsspec.highdicom._adapter` only.
"""
