"""Sphinx configuration: `uv run sphinx-build -W --keep-going -b html docs site` (the README's command; CI builds it in
tests/test_docs.py)."""

from __future__ import annotations

import importlib.metadata

project = "aitoolbox"
author = "aitoolbox contributors"
release = importlib.metadata.version("aitoolbox")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_default_options = {"show-inheritance": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

nitpicky = False

html_theme = "furo"
html_title = f"aitoolbox {release}"
