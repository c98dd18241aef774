# Licensed under a 3-clause BSD style license - see LICENSE
"""Sphinx configuration for the shiftstack_ccd documentation (sphinx-astropy)."""

import datetime
import os
from importlib import metadata

try:
    from sphinx_astropy.conf.v2 import *  # noqa: F401, F403
except ImportError:  # older sphinx-astropy
    try:
        from sphinx_astropy.conf.v1 import *  # noqa: F401, F403
    except ImportError as exc:
        raise ImportError("building the documentation needs sphinx-astropy: "
                          "pip install -e '.[docs]'") from exc

# -- Project information -----------------------------------------------------------------
project = "shiftstack_ccd"
author = "shiftstack_ccd developers"
copyright = f"2026-{datetime.date.today().year}, {author}"

try:
    release = metadata.version(project)
except metadata.PackageNotFoundError:  # building from a source tree that is not installed
    import shiftstack_ccd
    release = shiftstack_ccd.__version__
version = release.split("+")[0]

# -- General configuration ---------------------------------------------------------------
exclude_patterns = ["_build", "**.ipynb_checkpoints"]  # noqa: F405
nitpicky = False

intersphinx_mapping.update({  # noqa: F405
    "ccdproc": ("https://ccdproc.readthedocs.io/en/latest/", None),
    "photutils": ("https://photutils.readthedocs.io/en/stable/", None),
    "reproject": ("https://reproject.readthedocs.io/en/stable/", None),
    "astroquery": ("https://astroquery.readthedocs.io/en/latest/", None),
})
# sphinx-astropy maps python, numpy, scipy, matplotlib and astropy already; make sure of the
# two this package's docstrings link to most, whatever the sphinx-astropy version.
intersphinx_mapping.setdefault("numpy", ("https://numpy.org/doc/stable/", None))  # noqa: F405
intersphinx_mapping.setdefault(  # noqa: F405
    "astropy", ("https://docs.astropy.org/en/stable/", None))

# The build is offline by default: the inventories of other projects' docs are fetched only
# on request, with "sphinx-build -D disable_intersphinx=0 ..." (sphinx_astropy's
# intersphinx_toggle extension) or SHIFTSTACK_CCD_INTERSPHINX=1 in the environment. Without
# them, links to astropy, numpy ... are plain text (nitpicky is off, so no warnings).
disable_intersphinx = int(os.environ.get("SHIFTSTACK_CCD_INTERSPHINX", "0") != "1")

# -- sphinx-gallery ----------------------------------------------------------------------
# examples/plot_*.py are run at every build (their output and figures are the numbers quoted
# in the gallery); -D plot_gallery=0 renders them without running them. The Lowell examples
# find the real frames through SHIFTSTACK_CCD_DATA (else they download them once).
extensions.append("sphinx_gallery.gen_gallery")  # noqa: F405
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "generated/examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "reference_url": {"shiftstack_ccd": None},
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
}
exclude_patterns.append("generated/examples/*.ipynb")  # noqa: F405

# -- automodapi / numpydoc ---------------------------------------------------------------
automodapi_toctreedirnm = "api"
automodsumm_inherited_members = False
numpydoc_show_class_members = False
# Parameter types are not turned into cross-references (numpydoc_xref_param_type): 'bool',
# 'array_like' ... would then need the intersphinx inventories, and an offline build with
# -W (-D disable_intersphinx=1) would fail on them.

# -- HTML --------------------------------------------------------------------------------
html_title = f"{project} v{release}"
htmlhelp_basename = project + "doc"

# -- Other builders ----------------------------------------------------------------------
latex_documents = [("index", project + ".tex", project + " Documentation", author, "manual")]
man_pages = [("index", project.lower(), project + " Documentation", [author], 1)]
