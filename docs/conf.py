"""Sphinx configuration."""

project = "hdfsspec"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx", "numpydoc"]
numpydoc_show_class_members = False
autodoc_typehints = "none"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "fsspec": ("https://filesystem-spec.readthedocs.io/en/latest", None),
    "pydicom": ("https://pydicom.github.io/pydicom/stable", None),
    "highdicom": ("https://highdicom.readthedocs.io/en/latest", None),
}
html_theme = "alabaster"

# Offline builds (no route to the inventories): HDFSSPEC_DOCS_OFFLINE=1
import os  # noqa: E402

if os.environ.get("HDFSSPEC_DOCS_OFFLINE"):
    intersphinx_mapping = {}
