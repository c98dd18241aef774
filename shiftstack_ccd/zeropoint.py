# Licensed under a 3-clause BSD style license - see LICENSE
"""Photometric zero points from a reference catalogue of the field's stars.

`zero_point_from_catalog` matches the stars of an image (the sky stack of a
`~shiftstack_ccd.stack.StackResult`, where the stars are round) with a catalogue given as a
table (offline) or fetched from Gaia DR3 through astroquery (`gaia_catalog`, cached on disk
like the Horizons answers), and returns the magnitude of a flux of one unit of the image.
"""

import hashlib
import logging
import warnings

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from .exceptions import FrameError, MeasurementError

__all__ = ["gaia_catalog", "zero_point_from_catalog"]

log = logging.getLogger(__name__)


def gaia_catalog(center, radius, *, mag_limit=20.0, cache=True, cache_dir=None):
    """Gaia DR3 stars around a position (``ra``, ``dec`` in deg, ``G`` magnitude).

    The answer is cached on disk (``<root>/gaia/<hash>.ecsv``, with the same ``<root>`` as
    the Horizons cache, see `~shiftstack_ccd.ephemeris.horizons.horizons_cache_dir`), so a repeated
    query makes no request.

    Parameters
    ----------
    center : `~astropy.coordinates.SkyCoord`
    radius : `~astropy.units.Quantity`
    mag_limit : float
        Faintest G magnitude kept.
    cache : bool
        Read and write the disk cache.
    cache_dir : str or path, optional
        Cache root (default ``$SHIFTSTACK_CCD_CACHE`` or shiftstack_ccd's cache folder).

    Returns
    -------
    table : `~astropy.table.Table`
        ``ra``, ``dec`` (deg), ``G`` (mag); ``meta['band'] = 'G'``.
    """
    from .ephemeris.horizons import horizons_cache_dir

    center = SkyCoord(center).icrs
    radius = u.Quantity(radius, u.deg)
    query = (f"SELECT ra, dec, phot_g_mean_mag FROM gaiadr3.gaia_source WHERE "
             f"1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {center.ra.deg:.8f}, "
             f"{center.dec.deg:.8f}, {radius.to_value(u.deg):.6f})) AND "
             f"phot_g_mean_mag < {float(mag_limit):.2f}")
    folder = horizons_cache_dir(cache_dir).parent / "gaia"
    path = folder / (hashlib.sha256(query.encode()).hexdigest()[:32] + ".ecsv")
    if cache and path.exists():
        log.info("Gaia: cached answer %s", path)
        return Table.read(path)
    from astroquery.gaia import Gaia
    try:
        job = Gaia.launch_job_async(query)
        result = job.get_results()
    except Exception as exc:  # astroquery raises many kinds; the user needs one message
        raise FrameError(f"Gaia: the query failed ({exc}). No network? Give the catalogue as "
                         "a table instead (ra, dec and a magnitude column).") from None
    table = Table()
    table["ra"] = np.asarray(result["ra"], dtype=float) * u.deg
    table["dec"] = np.asarray(result["dec"], dtype=float) * u.deg
    table["G"] = np.asarray(result["phot_g_mean_mag"], dtype=float) * u.mag
    table.meta["band"] = "G"
    table.meta["catalog"] = "Gaia DR3"
    table.meta["query"] = query
    if cache:
        from ._utils import atomic_output
        with atomic_output(path, overwrite=True) as tmp:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
    return table


def _catalog_columns(catalog, band):
    """ra, dec (deg), mag arrays and the band name from a catalogue table."""
    names = {name.lower(): name for name in catalog.colnames}
    ra_name, dec_name = names.get("ra"), names.get("dec")
    if ra_name is None or dec_name is None:
        raise MeasurementError(f"the catalogue needs 'ra' and 'dec' columns (deg); it has "
                               f"{catalog.colnames}")
    if band is not None and band in catalog.colnames:
        mag_name = band
    elif "mag" in names:
        mag_name = names["mag"]
    elif band is None and catalog.meta.get("band") in catalog.colnames:
        mag_name = catalog.meta["band"]
    else:
        raise MeasurementError(f"the catalogue has no magnitude column {band!r} (nor 'mag'); its "
                               f"columns are {catalog.colnames}. Name the band with band=.")
    band = band or catalog.meta.get("band") or (mag_name if mag_name.lower() != "mag" else None)
    if not band:
        raise MeasurementError("the catalogue's magnitudes need a band: pass band= (e.g. 'V', 'r', "
                               "'G') or set catalog.meta['band']")
    ra = u.Quantity(catalog[ra_name], u.deg).value
    dec = u.Quantity(catalog[dec_name], u.deg).value
    mag = np.asarray(u.Quantity(catalog[mag_name]).value, dtype=float)
    return ra, dec, mag, band


def zero_point_from_catalog(ccd, catalog, band=None, *, fwhm=None, match_radius=None,
                            min_stars=3):
    """The zero point of an image from the catalogued stars on it.

    The image's stars are found (`photutils.detection.DAOStarFinder`, 10 sigma), measured in
    an aperture of radius 4 FWHM, at least 6 pixels (the whole PSF to about 1 %, with a
    sigma-clipped annulus background), and matched to the catalogue within ``match_radius``.
    The zero point is the sigma-clipped median of ``mag + 2.5 log10(flux)`` over the
    matches; its error is the scatter over the square root of their number.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The image (a sky stack), with a celestial WCS.
    catalog : `~astropy.table.Table`, str or ``'gaia'``
        ``ra``, ``dec`` (deg) and a magnitude column (``band``, else ``mag``); a path to such
        a table; or ``'gaia'`` for Gaia DR3 G (`gaia_catalog`, needs the network once).
    band : str, optional
        The magnitude column and band name (``catalog.meta['band']`` otherwise).
    fwhm : float, optional
        Stars' FWHM in pixels (default: measured, `~shiftstack_ccd.stars.stellar_fwhm`).
    match_radius : `~astropy.units.Quantity`, optional
        Default: one FWHM (at least 1 arcsec).
    min_stars : int
        Fewest matches accepted.

    Returns
    -------
    result : dict
        ``zero_point`` (mag of a flux of 1 in the image's unit), ``zero_point_err``,
        ``band``, ``n_stars``, ``scatter`` (mag, per star) and ``matches`` (a table).

    Raises
    ------
    MeasurementError
        A catalogue without the needed columns, without stars in the field, or with fewer
        than ``min_stars`` matched.
    FrameError
        An image without a celestial WCS or stars.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.table import Table
    >>> from shiftstack_ccd.datasets import simulate_observation
    >>> sim = simulate_observation(n_frames=1, shape=(200, 200), n_stars=40, seed=2)
    >>> stars = sim.stars.copy()
    >>> stars["V"] = 25.0 - 2.5 * np.log10(stars["flux"].value)  # 1 e- is V = 25
    >>> zp = zero_point_from_catalog(sim.frames[0], stars, band="V")
    >>> bool(abs(zp["zero_point"] - 25.0) < 0.02), zp["band"]
    (True, 'V')
    """
    from astropy.stats import sigma_clip, sigma_clipped_stats
    from photutils.detection import DAOStarFinder

    from ._utils import require_celestial_wcs
    from .photometry import aperture_flux
    from .stars import stellar_fwhm

    if isinstance(catalog, str) and catalog.lower() == "gaia":
        wcs = require_celestial_wcs(ccd, "zero_point_from_catalog")
        ny, nx = ccd.shape
        center = wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
        corner = wcs.pixel_to_world(0, 0)
        catalog = gaia_catalog(center, center.separation(corner) * 1.05)
        band = band or "G"
    elif not isinstance(catalog, Table):
        catalog = Table.read(catalog)
    ra, dec, mag, band = _catalog_columns(catalog, band)
    wcs = require_celestial_wcs(ccd, "zero_point_from_catalog")
    ny, nx = ccd.shape
    cx, cy = wcs.world_to_pixel(SkyCoord(ra * u.deg, dec * u.deg))
    cx, cy = np.asarray(cx, dtype=float), np.asarray(cy, dtype=float)
    inside = np.isfinite(cx) & np.isfinite(cy) & (cx > -0.5) & (cx < nx - 0.5) \
        & (cy > -0.5) & (cy < ny - 0.5) & np.isfinite(mag)
    if not inside.any():
        centre = wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
        raise MeasurementError(f"the catalogue has no star in the field (image centred at RA "
                               f"{centre.ra.deg:.5f}, Dec {centre.dec.deg:+.5f}, {nx} x {ny} "
                               f"pixels; catalogue of {len(ra)} stars). Is it the right field?")
    data = np.asarray(ccd.data, dtype=float)
    bad = ~np.isfinite(data) | (np.asarray(ccd.mask, dtype=bool) if ccd.mask is not None
                                else False)
    _, median, std = sigma_clipped_stats(data[~bad], sigma=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NoDetectionsWarning: handled below
        fwhm = float(fwhm) if fwhm is not None else (stellar_fwhm(ccd) or 3.0)
        found = DAOStarFinder(fwhm=fwhm, threshold=10 * std, exclude_border=True)(
            np.where(bad, median, data) - median, mask=bad)
    if found is None or len(found) == 0:
        raise FrameError("the image has no star above 10 sigma to calibrate with.")
    scale = np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0
    match_radius = u.Quantity(match_radius if match_radius is not None
                              else max(fwhm * scale, 1.0) * u.arcsec, u.arcsec)
    detected = wcs.pixel_to_world(found["x_centroid"], found["y_centroid"])
    reference = SkyCoord(ra[inside] * u.deg, dec[inside] * u.deg)
    index, separation, _ = detected.match_to_catalog_sky(reference)
    matched = separation < match_radius
    radius = max(4.0 * fwhm, 6.0)  # as measure_target's aperture correction
    rows = []
    for k in np.where(matched)[0]:
        x, y = float(found["x_centroid"][k]), float(found["y_centroid"][k])
        flux, _ = aperture_flux(ccd, (x, y), radius)
        if np.isfinite(flux) and flux > 0:
            rows.append((x, y, float(mag[inside][index[k]]), flux))
    if len(rows) < min_stars:
        raise MeasurementError(f"only {len(rows)} catalogue stars matched stars of the image "
                               f"within {match_radius:.2f} (at least {min_stars} needed): the "
                               "wrong field, band or epoch, or a WCS off by more than that?")
    matches = Table(rows=rows, names=("x", "y", "mag", "flux"))
    matches["zero_point"] = matches["mag"] + 2.5 * np.log10(matches["flux"])
    clipped = sigma_clip(np.asarray(matches["zero_point"]), sigma=3.0)
    good = np.asarray(clipped[~np.ma.getmaskarray(clipped)])
    matches["used"] = ~np.ma.getmaskarray(clipped)
    scatter = float(np.std(good, ddof=1)) if good.size > 1 else np.nan
    result = {"zero_point": float(np.median(good)),
              "zero_point_err": float(1.2533 * scatter / np.sqrt(good.size)),
              "band": band, "n_stars": int(good.size), "scatter": scatter,
              "matches": matches}
    log.info("zero point %s = %.3f +- %.3f from %d stars (scatter %.3f mag)", band,
             result["zero_point"], result["zero_point_err"], good.size, scatter)
    return result
