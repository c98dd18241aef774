# Licensed under a 3-clause BSD style license - see LICENSE
"""The real example data: found through ``SHIFTSTACK_CCD_DATA`` or downloaded.

`get_data_path` finds a file of the project's example data (laid out like its
``shared/data`` folder) through one setting, the environment variable
``SHIFTSTACK_CCD_DATA``; `fetch_example_data` returns the Lowell 42-inch frames of
asteroid (5945) Roachapproach, downloading the public originals when they are not local.
"""

import hashlib
import logging
import os
from pathlib import Path

from ..exceptions import DownloadError

__all__ = ["DATA_ENV", "fetch_example_data", "get_data_path"]

log = logging.getLogger(__name__)

#: Environment variable naming the folder of real example data (laid out like the
#: project's ``shared/data``: ``lowell42-5945/``, ``ephemerides/``, ...).
DATA_ENV = "SHIFTSTACK_CCD_DATA"


def get_data_path(relative=""):
    """Return the path of a file or folder of the real example data.

    The data are found through one setting, the environment variable
    ``SHIFTSTACK_CCD_DATA``, which names the folder that holds them.

    Parameters
    ----------
    relative : str
        Path inside that folder, e.g. ``"lowell42-5945/5945"``.

    Returns
    -------
    path : `~pathlib.Path`

    Raises
    ------
    FileNotFoundError
        If the variable is unset or the path does not exist; the message says how to get the data.
    """
    root = os.environ.get(DATA_ENV)
    if not root:
        raise FileNotFoundError(
            f"the real example data are not configured: set the environment variable "
            f"{DATA_ENV} to the folder that holds them")
    path = Path(root).expanduser() / relative
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found under {DATA_ENV}={root}")
    return path


# The public originals. The SHA-256 digests are those of the copies in the project's
# shared/data folder (recorded there as taken from this commit); a download that differs
# (e.g. a Git LFS pointer or an HTML error page) is refused rather than handed on.
_EXAMPLE_DATA = {
    "lowell42-5945": {
        "description": "Lowell 42-inch Hall telescope, NASA42 CCD (3x3 binned), 2019-03-26: "
                       "asteroid (5945) Roachapproach, 300 s VR frames, one bias, one flat",
        "base_url": "https://raw.githubusercontent.com/LowellObservatory/DeadParrots/"
                    "1306ec5e376686c4198b98d015809b1b73b29765/Asteroid_Photometry/data",
        "subsets": {
            "5945": {
                "20190326.0135.fits":
                    "49bd02cca8970d079b3beec4206f0d925c8cad6b6539e7680b8abad6ee8e53de",
                "20190326.0136.fits":
                    "827c5ed40709db06f5f9b5c13d06f2034b79646c6785519d600e3c208a7e92f2",
                "20190326.0137.fits":
                    "3c3c4e2861b2df8e4b05aa370ce93401f8455122785d27e647214334661cb783",
                "20190326.0138.fits":
                    "47deb380df99aaff3efc0994e9c81ed340c5d2c1be636144baf980082761e650",
                "20190326.0139.fits":
                    "2435bde25b88d47c3ea791cbb499fac168cb9d09f959c6ed7e6a9777136d43de",
                "20190326.0140.fits":
                    "484dea863a2e4e6a6cce5e49a7c7909509c3646d61167e0f8eb90087c4b357c3",
                "20190326.0141.fits":
                    "e23b2f4571b92b16989429928ab0e4f5332b8e750bb0470c6bdb5139f208099a",
                "20190326.0142.fits":
                    "a76732e0e82bc49787c29002aa623447bd2f4d0531de68e1769125f117124ac5",
                "20190326.0143.fits":
                    "41fe1ae047113e4f751184350a1dc8e41e8d19a306db049de1c20ab78ffc5cad",
                "20190326.0144.fits":
                    "f9b1aa844a553cab5dbe1fc682e2036a6a1b6990d88e94b11dbf43fd07ab19bb",
            },
            "zero": {
                "20190326.0001.fits":
                    "3a93b1e234e276273e284a2b41c506a867ff36eb4583953274fc1d580c0cf0a5",
            },
            "flat": {
                "20190326.0111.fits":
                    "cd8cf61cd0112dbbf6d9510e0e698c1691710486b110d6f0901ff9c62b2af052",
            },
        },
    },
}


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_example_data(name="lowell42-5945", subset="5945", download=True,
                       show_progress=False, timeout=None):
    """Return the paths of a set of real example frames, downloading them if needed.

    The frames are looked for first under the folder named by the environment
    variable ``SHIFTSTACK_CCD_DATA`` (see `get_data_path`), as
    ``<name>/<subset>/<file>``. When any is missing there and ``download`` is
    True, the public originals are downloaded into the astropy download cache
    with `astropy.utils.data.download_file` (``cache=True``, so only once) and
    checked against known SHA-256 digests.

    Parameters
    ----------
    name : str
        The data set. ``"lowell42-5945"``: ten consecutive 300 s VR frames of
        asteroid (5945) Roachapproach from the Lowell 42-inch Hall telescope
        (2019-03-26, NASA42 CCD binned 3x3, SCAMP/Gaia WCS; about 3.9 MB each),
        from GitHub ``LowellObservatory/DeadParrots``, folder
        ``Asteroid_Photometry/data/``, commit 1306ec5e.
    subset : str
        Which frames of the set: ``"5945"`` (the science frames), ``"zero"``
        (one bias) or ``"flat"`` (one VR twilight flat).
    download : bool
        Download what is not found locally. If False, a missing file raises
        `FileNotFoundError`.
    show_progress : bool
        Show a progress bar while downloading.
    timeout : float, optional
        Seconds to wait for the server (astropy's default if None).

    Returns
    -------
    paths : list of `~pathlib.Path`
        One path per frame, in observing order. Local copies keep their
        original names; downloaded ones live under astropy's cache names
        (the original name is in each file's ``FILENAME`` header card).

    Raises
    ------
    ValueError
        If ``name`` or ``subset`` is unknown.
    FileNotFoundError
        If a frame is missing locally and ``download`` is False.
    DownloadError
        If a download fails (no network...) or does not match the original: one message
        naming the URL and the offline alternative (an `OSError`).

    Examples
    --------
    >>> from shiftstack_ccd.datasets import fetch_example_data
    >>> paths = fetch_example_data("lowell42-5945")  # doctest: +SKIP
    >>> len(paths)  # doctest: +SKIP
    10
    """
    if name not in _EXAMPLE_DATA:
        raise ValueError(f"unknown example data set {name!r}; known: "
                         f"{', '.join(sorted(_EXAMPLE_DATA))}")
    entry = _EXAMPLE_DATA[name]
    if subset not in entry["subsets"]:
        raise ValueError(f"data set {name!r} has no subset {subset!r}; known: "
                         f"{', '.join(entry['subsets'])}")
    files = entry["subsets"][subset]
    local = []
    for filename in files:
        try:
            local.append(get_data_path(f"{name}/{subset}/{filename}"))
        except FileNotFoundError as exc:
            reason = str(exc)
            break
    else:
        return local
    if not download:
        raise FileNotFoundError(
            f"example data {name}/{subset} not found locally ({reason}); set {DATA_ENV} "
            f"to a folder that holds them or call fetch_example_data(download=True)")

    from astropy.utils.data import download_file  # only needed here

    paths = []
    for filename, digest in files.items():
        url = f"{entry['base_url']}/{subset}/{filename}"
        log.info("downloading %s", url)
        try:
            path = Path(download_file(url, cache=True, show_progress=show_progress,
                                      timeout=timeout))
        except OSError as exc:  # urllib's URLError, timeouts, refused connections
            reason = getattr(exc, "reason", None) or exc
            raise DownloadError(
                f"{url}: cannot download the example data {name}/{subset} ({reason}). No "
                f"network? Copy the files to <folder>/{name}/{subset}/ and set {DATA_ENV}="
                f"<folder>, or run once with network access (downloads are cached).") from None
        if _sha256(path) != digest:
            raise DownloadError(f"{url}: the downloaded file ({path}) is not the original "
                                "(SHA-256 differs); remove it from the cache with "
                                "astropy.utils.data.clear_download_cache(url) and try again")
        paths.append(path)
    return paths
