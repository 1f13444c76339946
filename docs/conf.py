"""Sphinx configuration."""

project = "hdfsspec"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx", "numpydoc"]
numpydoc_show_class_members = False
autodoc_typehints = "none"
html_theme = "alabaster"

# Links to the Python, fsspec, pydicom and highdicom docs need their inventories, fetched
# from the network: only when HDFSSPEC_DOCS_INTERSPHINX=1 (as for a published build), so
# that a build without a network (tox -e docs, CI sandboxes) has nothing to warn about.
# Without them those references are plain text.
import os  # noqa: E402

intersphinx_mapping = {}
if os.environ.get("HDFSSPEC_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "fsspec": ("https://filesystem-spec.readthedocs.io/en/latest", None),
        "pydicom": ("https://pydicom.github.io/pydicom/stable", None),
        "highdicom": ("https://highdicom.readthedocs.io/en/latest", None),
    }
