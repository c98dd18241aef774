# Licensed under a 3-clause BSD style license - see LICENSE
"""Sphinx configuration for the shiftstack_ccd documentation (sphinx-astropy)."""

import datetime
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

# Offline builds: sphinx-build -D disable_intersphinx=1 ... (sphinx_astropy's
# intersphinx_toggle extension) skips fetching the inventories.

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
