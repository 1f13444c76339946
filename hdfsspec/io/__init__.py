"""How bytes come from a store: below the cache, above the DICOM layout.

The link's cost model (:mod:`~hdfsspec.io.link`), the planning of coalesced ranges
(:mod:`~hdfsspec.io.planning`), the open's first read (:mod:`~hdfsspec.io.first_read`),
signed and version-pinned ranges (:mod:`~hdfsspec.io.signed`,
:mod:`~hdfsspec.io.version_pin`), retries of transient failures
(:mod:`~hdfsspec.io.retry`), redaction of secrets (:mod:`~hdfsspec.io.redact`) and the
per-phase statistics (:mod:`~hdfsspec.io.stats`).
"""
