"""Tests of shiftstack_ccd.astrometry: known offsets, star matching, errors.

Simulated star fields (made here, with a known WCS) check conventions and recovery of a
known shift/rotation; the real Lowell frames (SCAMP TPV distortion) check that a
perturbed WCS is restored to 0.05 pixel rms, against the same frame and against another
exposure of the night.
"""

import copy

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData
from astropy.table import Table
from astropy.wcs import WCS, Sip
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.special import erf

from shiftstack_ccd.astrometry import correct_wcs, read_offsets
from shiftstack_ccd.stars import detect_stars
from shiftstack_ccd.exceptions import FrameError
from shiftstack_ccd.frames import read_frames

SHAPE = (300, 320)
SCALE = 1.0  # arcsec / pixel of the simulated frames


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def make_wcs(crval=(150.0, 2.0), sip=False, crpix=None):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(crval)
    wcs.wcs.crpix = [(SHAPE[1] + 1) / 2, (SHAPE[0] + 1) / 2] if crpix is None else crpix
    theta = np.radians(20.0)
    s = SCALE / 3600
    wcs.wcs.cd = [[-s * np.cos(theta), s * np.sin(theta)], [s * np.sin(theta), s * np.cos(theta)]]
    if sip:
        a = np.zeros((3, 3))
        b = np.zeros((3, 3))
        a[2, 0], a[1, 1], b[0, 2] = 2e-5, -1e-5, 1.5e-5  # up to ~1 pixel at the corners
        wcs.sip = Sip(a, b, None, None, wcs.wcs.crpix)
    wcs.wcs.set()
    return wcs


def star_field(wcs, rng, n=150, sky=100.0, noise=5.0, fwhm=3.0):
    """A frame of Gaussian stars at random sky positions rendered through ``wcs``.

    Returns the frame and a catalogue (ra, dec, mag) of the stars plus faint ones that
    are too faint to be detected (as a real catalogue would have).
    """
    ny, nx = SHAPE
    x = rng.uniform(-20, nx + 20, n)
    y = rng.uniform(-20, ny + 20, n)
    flux = 10 ** rng.uniform(3.3, 4.7, n)
    sky_pos = wcs.pixel_to_world(x, y)
    sigma = fwhm / 2.3548
    data = np.full(SHAPE, sky)
    yy, xx = np.mgrid[:ny, :nx]
    for xi, yi, fi in zip(x, y, flux):
        x0, y0 = int(round(xi)), int(round(yi))
        sl = (slice(max(y0 - 10, 0), max(y0 + 11, 0)), slice(max(x0 - 10, 0), max(x0 + 11, 0)))
        px, py = xx[sl], yy[sl]
        if px.size == 0:
            continue
        s2 = np.sqrt(2) * sigma
        ex = erf((px + 0.5 - xi) / s2) - erf((px - 0.5 - xi) / s2)
        ey = erf((py + 0.5 - yi) / s2) - erf((py - 0.5 - yi) / s2)
        data[sl] += fi * ex * ey / 4
    data += rng.normal(0, noise, SHAPE)
    faint = wcs.pixel_to_world(rng.uniform(0, nx, 60), rng.uniform(0, ny, 60))
    catalog = Table({"ra": np.concatenate([sky_pos.ra.deg, faint.ra.deg]) * u.deg,
                     "dec": np.concatenate([sky_pos.dec.deg, faint.dec.deg]) * u.deg,
                     "phot_g_mean_mag": np.concatenate([25 - 2.5 * np.log10(flux),
                                                        np.full(60, 22.0)])})
    return CCDData(data.astype(np.float32), unit="adu", wcs=wcs), catalog


def perturbed(ccd, east=0.0, north=0.0, rotation=0.0, dpix=None):
    """A copy whose WCS is moved by (east, north) arcsec on CRVAL, CD rotated by
    ``rotation`` degrees, or CRPIX moved by ``dpix`` pixels."""
    out = ccd.copy()
    w = out.wcs
    lon, lat = w.wcs.crval
    w.wcs.crval = [lon + east / 3600 / np.cos(np.radians(lat)), lat + north / 3600]
    t = np.radians(rotation)
    w.wcs.cd = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ w.wcs.cd
    if dpix is not None:
        w.wcs.crpix = w.wcs.crpix + np.asarray(dpix)
        if w.sip is not None:
            w.sip = Sip(w.sip.a, w.sip.b, None, None, w.wcs.crpix)
    w.wcs.set()
    return out


def rms_pixels(wcs_a, wcs_b, xy):
    """Rms distance between the sky positions two WCS give for pixels xy, in the pixels of
    ``wcs_b`` at those positions (its own scale and distortion, no nominal pixel size)."""
    x, y = wcs_b.world_to_pixel(wcs_a.pixel_to_world(xy[:, 0], xy[:, 1]))
    return float(np.sqrt(np.mean((x - xy[:, 0]) ** 2 + (y - xy[:, 1]) ** 2)))


def grid(shape=SHAPE, n=12):
    yy, xx = np.meshgrid(np.linspace(0, shape[0] - 1, n), np.linspace(0, shape[1] - 1, n),
                         indexing="ij")
    return np.column_stack([xx.ravel(), yy.ravel()])


# --------------------------------------------------------------------------------------
# Known offsets and their sign conventions
# --------------------------------------------------------------------------------------
def test_pixel_offset_convention():
    """offset=(dx, dy): the star the old WCS puts at p is at p + (dx, dy)."""
    true = make_wcs()
    d = np.array([3.7, -2.2])
    old = perturbed(CCDData(np.zeros(SHAPE), unit="adu", wcs=copy.deepcopy(true)),
                    dpix=-d)  # old(q) = true(q + d)
    out = correct_wcs(old, offset=tuple(d))
    # Stars the old WCS put at p are now found at p + d, to a thousandth of a pixel.
    p = grid()
    stars = old.wcs.pixel_to_world(p[:, 0], p[:, 1])
    x, y = out.wcs.world_to_pixel(stars)
    np.testing.assert_allclose(np.column_stack([x, y]), p + d, atol=1e-3)
    # The corrected WCS is the true one (to 0.002 px).
    assert rms_pixels(out.wcs, true, p) < 2e-3
    np.testing.assert_array_equal(out.wcs.wcs.crpix, old.wcs.wcs.crpix)  # CRVAL moved, not CRPIX
    assert out.meta["WCSCORR"] == "offset"
    assert out.meta["WCSDX"] == pytest.approx(d[0], abs=1e-3)
    assert out.meta["WCSDY"] == pytest.approx(d[1], abs=1e-3)
    assert "pixel offset" in str(out.meta["HISTORY"])


def test_sky_offset_convention_and_equivalences():
    """A sky offset is added to the positions; forms of the same offset agree."""
    wcs = make_wcs()
    ccd = CCDData(np.zeros(SHAPE), unit="adu", wcs=wcs)
    dra, ddec = 2.5 * u.arcsec, -1.5 * u.arcsec
    out = correct_wcs(ccd, offset=(dra, ddec))
    p = grid()
    before = ccd.wcs.pixel_to_world(p[:, 0], p[:, 1])
    after = out.wcs.pixel_to_world(p[:, 0], p[:, 1])
    east, north = before.spherical_offsets_to(after)
    np.testing.assert_allclose(east.to_value(u.arcsec), 2.5, atol=2e-3)
    np.testing.assert_allclose(north.to_value(u.arcsec), -1.5, atol=2e-3)
    assert out.meta["WCSDRA"] == pytest.approx(2.5, abs=1e-3)
    assert out.meta["WCSDDEC"] == pytest.approx(-1.5, abs=1e-3)
    # The same offset as a Quantity array, and as a pair of SkyCoord (given, true).
    star = wcs.pixel_to_world(100, 120)
    true = star.spherical_offsets_by(dra, ddec)
    for form in ([2.5, -1.5] * u.arcsec, (star, true)):
        other = correct_wcs(ccd, offset=form)
        assert rms_pixels(other.wcs, out.wcs, p) < 1e-3
    # The equivalent pixel offset has the opposite sign: sky = -CD @ pixel.
    cd_arcsec = wcs.wcs.cd * 3600
    d = np.linalg.solve(cd_arcsec, -np.array([2.5, -1.5]))  # CD axes are (east, north)
    pix = correct_wcs(ccd, offset=tuple(d))
    assert rms_pixels(pix.wcs, out.wcs, p) < 0.01
    # The input frame is untouched.
    np.testing.assert_array_equal(ccd.wcs.wcs.crval, [150.0, 2.0])
    assert "WCSCORR" not in ccd.meta


def _lookup_frame(name):
    ccd = CCDData(np.zeros(SHAPE), unit="adu", wcs=make_wcs())
    ccd.meta["SSFILE"] = f"/some/night/{name}"
    return ccd


@pytest.mark.parametrize("suffix", [".ecsv", ".csv"])
def test_offset_table_lookup(tmp_path, suffix):
    table = Table({"file": ["20190326.0135.fits", "20190326.0136"],
                   "dx": [1.25, -0.5], "dy": [0.0, 2.0]})
    path = tmp_path / f"offsets{suffix}"
    table.write(path, format="ascii.ecsv" if suffix == ".ecsv" else "ascii.csv")
    offsets = read_offsets(path)
    assert offsets["dx"].unit == u.pix
    # Matched by base name, with or without the FITS extension.
    for name, d in (("20190326.0135.fits", (1.25, 0.0)), ("20190326.0136.fits", (-0.5, 2.0))):
        out = correct_wcs(_lookup_frame(name), offset=path)
        assert (out.meta["WCSDX"], out.meta["WCSDY"]) == pytest.approx(d, abs=1e-3)
    with pytest.raises(FrameError, match=r"20190326\.0137\.fits'? is not in .*offsets"):
        correct_wcs(_lookup_frame("20190326.0137.fits"), offset=path)


def test_offset_table_in_arcsec_from_ecsv_units(tmp_path):
    table = Table({"file": ["a.fits"], "dra": [0.05] * u.arcmin, "ddec": [-1.0] * u.arcsec})
    path = tmp_path / "sky.ecsv"
    table.write(path)
    offsets = read_offsets(path)
    assert offsets["dra"][0] == 3.0 * u.arcsec
    out = correct_wcs(_lookup_frame("a.fits"), offset=path)
    assert (out.meta["WCSDRA"], out.meta["WCSDDEC"]) == pytest.approx((3.0, -1.0), abs=1e-3)


@pytest.mark.parametrize("columns, message", [
    ({"name": ["a.fits"], "dx": [1.0], "dy": [1.0]}, "no 'file' column"),
    ({"file": ["a.fits"], "dx": [1.0]}, "neither of the pixel columns"),
    ({"file": ["a.fits"], "dx": [1.0], "dy": [1.0], "dra": [1.0], "ddec": [1.0]},
     "both of the pixel columns"),
    ({"file": ["a.fits", "b.fits"], "dx": [1.0, np.nan], "dy": [1.0, 2.0]},
     r"non-finite values \(rows for \['b.fits'\]\)"),
    ({"file": ["a.fits", "/x/a.fits"], "dx": [1.0, 2.0], "dy": [1.0, 2.0]},
     "appears more than once"),
    ({"file": ["a.fits"], "dx": [1.0] * u.arcsec, "dy": [1.0] * u.arcsec},
     "must be in pixels"),
    ({"file": ["a.fits"], "dra": [1.0] * u.pix, "ddec": [1.0] * u.pix}, "not an angle"),
])
def test_bad_offset_tables(columns, message):
    with pytest.raises(FrameError, match=message):
        correct_wcs(_lookup_frame("a.fits"), offset=Table(columns))


def test_bad_offset_file_and_arguments(tmp_path):
    with pytest.raises(FrameError, match="no such offset table"):
        read_offsets(tmp_path / "missing.csv")
    garbage = tmp_path / "garbage.ecsv"
    garbage.write_text("# %ECSV 1.0\n# not yaml: [\nfile dx dy\n")
    with pytest.raises(FrameError, match="cannot be read as an offset table"):
        read_offsets(garbage)
    ccd = _lookup_frame("a.fits")
    with pytest.raises(ValueError, match="not understood"):
        correct_wcs(ccd, offset=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="needs offset= .* or reference="):
        correct_wcs(ccd)
    anonymous = CCDData(np.zeros(SHAPE), unit="adu", wcs=make_wcs())
    with pytest.raises(FrameError, match="no file name"):
        correct_wcs(anonymous, offset=Table({"file": ["a.fits"], "dx": [1.0], "dy": [1.0]}))


# --------------------------------------------------------------------------------------
# Measured corrections on simulated star fields
# --------------------------------------------------------------------------------------
def test_detect_stars_positions():
    rng = np.random.default_rng(11)
    wcs = make_wcs()
    ccd, catalog = star_field(wcs, rng)
    stars = detect_stars(ccd)
    assert stars.meta["fwhm"] == pytest.approx(3.0, rel=0.1)
    truth = np.column_stack(wcs.world_to_pixel(SkyCoord(catalog["ra"], catalog["dec"])))
    from scipy.spatial import cKDTree
    dist, _ = cKDTree(truth).query(np.column_stack([stars["x"], stars["y"]]))
    assert len(stars) >= 80
    # Centroids within 0.1 pixel rms of the truth (S/N of these stars is >= 20).
    good = dist < 1
    assert good.mean() > 0.95
    assert np.sqrt(np.mean(dist[good] ** 2)) < 0.1


@pytest.mark.parametrize("fit, rotation", [("shift", 0.0), ("shift+rotation", 0.1),
                                           ("affine", 0.1)])
def test_recovers_known_shift_and_rotation(tmp_path, fit, rotation):
    """A catalogue reference restores a SIP WCS perturbed by 4" and 0.1 deg."""
    rng = np.random.default_rng(5)
    true = make_wcs(sip=True)
    ccd, catalog = star_field(true, rng)
    bad = perturbed(ccd, east=3.0, north=-2.5, rotation=rotation)
    path = tmp_path / "catalog.ecsv"
    catalog.write(path)
    p = grid()
    assert rms_pixels(bad.wcs, true, p) > 3.5
    out = correct_wcs(bad, reference=path, fit=fit)
    assert rms_pixels(out.wcs, true, p) < 0.05
    assert out.meta["WCSROT"] == pytest.approx(-rotation, abs=0.01)
    assert out.meta["WCSNSTAR"] >= 60
    assert out.meta["WCSRMSPX"] < 0.15
    assert out.meta["WCSFIT"] == fit
    np.testing.assert_array_equal(out.wcs.sip.a, true.sip.a)  # distortion untouched
    np.testing.assert_array_equal(out.wcs.wcs.crpix, true.wcs.crpix)
    # The input frame keeps its (wrong) WCS.
    assert rms_pixels(bad.wcs, true, p) > 3.5


def test_cutout_far_from_crpix():
    """A cutout whose CRPIX lies 2000 pixels away: rotation (about the frame centre) and
    shift stay separable."""
    rng = np.random.default_rng(12)
    true = make_wcs(crpix=[2000.0, -1500.0])
    ccd, catalog = star_field(true, rng)
    bad = perturbed(ccd, east=1.0, rotation=0.1)  # about CRPIX: ~4 px at the frame
    out = correct_wcs(bad, reference=catalog, fit="shift+rotation")
    assert rms_pixels(out.wcs, true, grid()) < 0.05
    assert out.meta["WCSROT"] == pytest.approx(-0.1, abs=0.01)


def test_fit_that_does_not_converge_is_an_error(monkeypatch):
    import scipy.optimize

    class Failed:
        success, message, x = False, "the maximum number of evaluations is exceeded", None

    rng = np.random.default_rng(13)
    ccd, catalog = star_field(make_wcs(), rng)
    ccd.meta["SSFILE"] = "field.fits"
    monkeypatch.setattr(scipy.optimize, "least_squares", lambda *args, **kwargs: Failed())
    with pytest.raises(FrameError, match=r"field\.fits: the WCS fit did not converge \(the "
                                         "maximum number of evaluations"):
        correct_wcs(ccd, reference=catalog)
    assert "WCSCORR" not in ccd.meta


def test_measured_offset_follows_pixel_convention():
    """A WCS off by a pure pixel translation d is measured as WCSDX, WCSDY = d."""
    rng = np.random.default_rng(8)
    true = make_wcs()
    ccd, catalog = star_field(true, rng)
    d = np.array([-4.3, 6.1])
    bad = perturbed(ccd, dpix=-d)  # the star the bad WCS puts at p is at p + d
    out = correct_wcs(bad, reference=SkyCoord(catalog["ra"], catalog["dec"]))
    assert (out.meta["WCSDX"], out.meta["WCSDY"]) == pytest.approx(tuple(d), abs=0.05)
    assert rms_pixels(out.wcs, true, grid()) < 0.05


def test_detected_stars_table_as_reference():
    """The table `detect_stars` returns (with its ``sky`` column) is a reusable reference."""
    rng = np.random.default_rng(14)
    true = make_wcs()
    ccd, _ = star_field(true, rng)
    positions = detect_stars(ccd)
    bad = perturbed(ccd, east=-2.0, north=3.0, rotation=0.05)
    out = correct_wcs(bad, reference=positions, fit="shift+rotation")
    # Same detections on both sides: the original WCS comes back to 1e-3 pixel.
    assert rms_pixels(out.wcs, true, grid()) < 1e-3
    assert out.meta["WCSNSTAR"] == len(positions)


def test_offset_then_reference():
    """A known coarse offset is applied first, the stars refine it."""
    rng = np.random.default_rng(9)
    true = make_wcs()
    ccd, catalog = star_field(true, rng)
    bad = perturbed(ccd, dpix=(-70.0, 0.0))  # beyond the default 50 px search
    with pytest.raises(FrameError, match="no consistent offset|do not overlap"):
        correct_wcs(bad, reference=catalog)
    out = correct_wcs(bad, offset=(69.0, 0.5), reference=catalog)
    assert out.meta["WCSCORR"] == "offset+reference"
    assert out.meta["WCSDX"] == pytest.approx(70.0, abs=0.05)
    assert rms_pixels(out.wcs, true, grid()) < 0.05


def test_blank_frame_has_too_few_stars():
    rng = np.random.default_rng(3)
    ccd = CCDData(rng.normal(100, 5, SHAPE).astype(np.float32), unit="adu", wcs=make_wcs())
    ccd.meta["SSFILE"] = "blank.fits"
    catalog = Table({"ra": [150.0, 150.01], "dec": [2.0, 2.01]})
    with pytest.raises(FrameError, match=r"blank\.fits: only \d stars detected"):
        correct_wcs(ccd, reference=catalog)


def test_reference_elsewhere_on_the_sky():
    rng = np.random.default_rng(4)
    ccd, catalog = star_field(make_wcs(), rng)
    ccd.meta["SSFILE"] = "field.fits"
    elsewhere = catalog.copy()
    elsewhere["dec"] = elsewhere["dec"].quantity + 10 * u.deg
    with pytest.raises(FrameError, match=r"field\.fits: only 0 stars .* do(es)? not overlap"):
        correct_wcs(ccd, reference=elsewhere)


def test_implausible_fit_is_refused():
    rng = np.random.default_rng(6)
    true = make_wcs()
    ccd, catalog = star_field(true, rng)
    bad = perturbed(ccd, east=2.0, rotation=0.3)
    with pytest.raises(FrameError, match="rotation .* larger than max_rotation"):
        correct_wcs(bad, reference=catalog, fit="shift+rotation", max_rotation=0.1 * u.deg)
    with pytest.raises(ValueError, match="choose one of"):
        correct_wcs(bad, reference=catalog, fit="rotation")


def test_catalog_without_radec_columns():
    rng = np.random.default_rng(7)
    ccd, catalog = star_field(make_wcs(), rng)
    catalog.rename_columns(["ra", "dec"], ["alpha", "delta"])
    with pytest.raises(FrameError, match="no RA/Dec columns"):
        correct_wcs(ccd, reference=catalog)


# --------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------
def test_frame_without_wcs_is_refused(shared_data):
    folder = shared_data("wallace-2713")
    ccd = read_frames(str(folder / "lux-180.000secs.Light.Open.00000015.fit"), unit="adu")[0]
    with pytest.raises(FrameError, match="00000015.fit: has no celestial WCS, and "
                                         "'correct_wcs' needs one"):
        correct_wcs(ccd, offset=(1.0, 1.0))


@pytest.mark.parametrize("fit, rotation, reference", [
    ("shift", 0.0, "same"),
    ("shift+rotation", 0.1, "same"),
    ("shift+rotation", 0.1, "other"),
])
def test_lowell_perturbed_wcs_is_restored(shared_data, fit, rotation, reference):
    """Real frames, SCAMP TPV distortion: perturb by 3-4 arcsec (and 0.1 deg), correct
    against the same frame (original WCS) or the next exposure (dithered, other epoch):
    the star positions agree with the original WCS to 0.05 pixel rms."""
    folder = shared_data("lowell42-5945/5945")
    frame, other = read_frames([folder / "20190326.0135.fits", folder / "20190326.0136.fits"])
    ref = frame if reference == "same" else other
    bad = perturbed(frame, east=3.0, north=-4.0, rotation=rotation)
    stars = detect_stars(frame)
    xy = np.column_stack([stars["x"], stars["y"]])
    # the 5" shift in the frame's pixels (1.107"/pixel by its WCS; the rotation adds 0.2%)
    scale = np.mean(proj_plane_pixel_scales(frame.wcs.celestial)) * 3600
    assert rms_pixels(bad.wcs, frame.wcs, xy) == pytest.approx(5.0 / scale, rel=0.01)
    out = correct_wcs(bad, reference=ref, fit=fit)
    assert rms_pixels(out.wcs, frame.wcs, xy) < 0.05
    assert out.meta["WCSNSTAR"] >= 100
    assert out.meta["WCSRMSPX"] < 0.1
    assert out.meta["WCSFIT"] == fit
    assert "measured on" in str(out.meta["HISTORY"])
    # The TPV distortion is carried through unchanged.
    before, after = frame.wcs.to_header(relax=True), out.wcs.to_header(relax=True)
    pv = [k for k in before if k.startswith("PV")]
    assert len(pv) >= 20
    assert all(after[k] == before[k] for k in pv)
    assert after["CTYPE1"] == "RA---TPV"
