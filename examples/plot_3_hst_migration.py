"""
From the notebook: an HST sequence, step by step
================================================

``shiftstack_ccd`` grew out of a Jupyter notebook that stacks HST drizzled products
(``*_drc.fits``) of a small body on its JPL Horizons ephemeris seen from HST
(``location='@hst'``). This page runs the same setting with the package and says, for
each step of the notebook, what the package does instead and why.

The data are simulated, so that every result can be checked against the truth: eight
WFC3/UVIS-like exposures (0.04 arcsec pixels, 350 s each) of a distant body moving
0.5 arcsec per hour written to disk as DRC-like files
with ``SCI``, ``ERR`` and ``DQ`` extensions, ``EXPSTART``/``EXPEND`` in the primary header
and ``BUNIT = 'ELECTRONS/S'``, and an ephemeris table as Horizons gives it for ``@hst``.
"""

# %%
# HST-style files on disk
# -----------------------
# `~shiftstack_ccd.datasets.simulate_observation` makes the frames in electrons, with the
# cosmic-ray rate of HST's CCDs; each is written as a DRC-like file: count rates (electrons
# per second), the science array in ``SCI``, its standard deviation in ``ERR``, data-quality
# flags in ``DQ`` (here a few hot pixels, flag 16), the times as MJD in ``EXPSTART`` and
# ``EXPEND``.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

import shiftstack_ccd as ss
from shiftstack_ccd.photometry import aperture_snr, centroid_target
from shiftstack_ccd.visualization import plot_image

sim = ss.datasets.simulate_observation(
    n_frames=8, shape=(300, 300), pixel_scale=0.04 * u.arcsec, exptime=350 * u.s,
    cadence=400 * u.s, target_rate=(0.45, -0.2) * u.arcsec / u.hour, target_snr=4.0,
    fwhm=2.0, psf_beta=2.5, sky=40.0, read_noise=3.1, gain=1.0, unit="electron",
    n_stars=25, dither=3.0, max_rotation=0.1 * u.deg, start="2025-07-14T11:02:00",
    object_name="SIMULATED TNO", seed=11)
folder = Path(tempfile.mkdtemp())
rng = np.random.default_rng(5)


def write_hst_like(frame, path, kind="drc"):
    """Write a simulated frame as an HST FLT (electrons) or DRC (electrons/s) file."""
    start = Time(frame.header["DATE-OBS"], scale="utc")
    exptime = frame.header["EXPTIME"]
    primary = fits.Header()
    primary["TELESCOP"] = "HST"
    primary["INSTRUME"] = "WFC3"
    primary["TARGNAME"] = frame.header["OBJECT"]
    primary["DATE-OBS"] = start.isot[:10]
    primary["TIME-OBS"] = start.isot[11:19]
    primary["EXPSTART"] = (start.mjd, "exposure start time (Modified Julian Date)")
    primary["EXPEND"] = ((start + exptime * u.s).mjd, "exposure end time (Modified Julian Date)")
    primary["EXPTIME"] = exptime
    scale = 1.0 / exptime if kind == "drc" else 1.0  # DRC: count rates
    header = frame.wcs.to_header()
    header["BUNIT"] = "ELECTRONS/S" if kind == "drc" else "ELECTRONS"
    dq = np.zeros(frame.shape, dtype=np.int16)
    dq[tuple(rng.integers(0, frame.shape[0], (2, 20)))] = 16  # hot pixels
    hdul = fits.HDUList([
        fits.PrimaryHDU(header=primary),
        fits.ImageHDU((frame.data * scale).astype(np.float32), header, name="SCI"),
        fits.ImageHDU((frame.uncertainty.array * scale).astype(np.float32), header,
                      name="ERR"),
        fits.ImageHDU(dq, header, name="DQ")])
    hdul.writeto(path)
    return path


paths = [write_hst_like(f, folder / f"sim{i:02d}_drc.fits") for i, f in enumerate(sim.frames)]
fits.info(paths[0])

# %%
# Reading the frames
# ------------------
# *Notebook*: ``fits.getdata`` of the primary HDU, the WCS from extension 1, and the mid-time
# from ``(EXPSTART + EXPEND) / 2`` written out by hand. *Package*: `~shiftstack_ccd.read_frames`
# takes ``SCI`` as the data, ``ERR`` as a `~astropy.nddata.StdDevUncertainty`, ``DQ != 0``
# as the mask, ``BUNIT`` as the unit, and finds the UTC mid-exposure time from
# ``EXPSTART``/``EXPEND`` (or any of the usual card sets), saying which cards it used; a
# frame whose time it cannot tell is refused by name, never guessed.
frames = ss.read_frames(paths)
first = frames[0]
t0 = ss.mid_exposure_time(first)
print(f"unit {first.unit}; uncertainty {type(first.uncertainty).__name__}; "
      f"{int(first.mask.sum())} pixels masked by DQ")
print(f"mid-exposure {t0.isot} ({t0.info.description}); truth {sim.truth['time'][0].isot}")

# %%
# An FLT-like file (electrons, not a rate) is read the same way; its unit says which it is:
flt = write_hst_like(sim.frames[0], folder / "sim00_flt.fits", kind="flt")
print("FLT unit:", ss.read_frames([flt])[0].unit)

# %%
# The ephemeris seen from HST
# ---------------------------
# *Notebook*: one ``Horizons(..., location='@hst', epochs=jd).ephemerides()`` query per frame,
# inside the stacking loop. *Package*: one query for all the frames' times, cached, with the
# full precision Horizons can give (``extra_precision``)::
#
#     eph = ss.Ephemeris.from_horizons(record_id, location="@hst", times=times,
#                                      id_type="smallbody")
#
# or, on the command line, ``shiftstack-ccd ephemeris "*_drc.fits" --target ...
# --location @hst -o eph.ecsv``. Offline, any table of times and positions will do; here is
# one with Horizons' column names, at one-minute steps over the visit (for this simulation
# the truth; a real ``@hst`` table also carries HST's orbital parallax, a wobble with HST's
# 96-minute orbit, which is why the observer must be HST and not the geocentre):
times = sim.truth["time"][0] - 10 * u.min + np.arange(0, 70) * u.min
positions = sim.target_at(times)
table = Table({"datetime_jd": times.jd, "RA": positions.ra.deg, "DEC": positions.dec.deg,
               "RA_3sigma": np.full(len(times), 0.02), "DEC_3sigma": np.full(len(times), 0.02)})
table.meta["location"] = "@hst"
table.write(folder / "eph_hst.ecsv")
eph = ss.Ephemeris.from_table(folder / "eph_hst.ecsv")
print(eph)

# %%
# Cosmic rays
# -----------
# *Notebook*: a Python double loop over every pixel (about 20 microseconds a pixel: six
# minutes for a 4k x 4k frame) that compares each pixel with 15 times the median of a 2 x 2
# window that includes the pixel itself, which flags everything when the sky is near zero,
# and it modifies its input. *Package*: `~shiftstack_ccd.clean_cosmic_rays`, vectorised, with
# a threshold in units of each pixel's noise and a test that tells stars from hits; it
# returns a new frame with the hits repaired and masked. Against the simulation's truth:
clean = [ss.clean_cosmic_rays(f) for f in frames]
found = np.array([c.mask & ~f.mask for c, f in zip(clean, frames)])
truth = np.array(sim.cosmic_ray_masks)
print(f"cosmic-ray pixels: {int(truth.sum())} true, {int((found & truth).sum())} found, "
      f"{int((found & ~truth).sum())} false detections (over {truth.size} pixels)")

# %%
# Shifting and combining
# ----------------------
# *Notebook*: the target's pixel rounded to whole pixels with ``int()``, a 1000 x 1000 crop
# with x and y swapped, an optional direct ``correlate2d`` of whole frames (hours at
# 1000 x 1000, and its zero lag off by one pixel for even sizes), the sum divided by N - 1,
# and files overwritten without asking. *Package*: every frame is resampled onto one tangent
# plane at the target's position at the reference time, with the exact sub-pixel offset of
# each epoch and its uncertainty and mask carried along; the optional refinement
# (``refine=True``) is an FFT sub-pixel cross-correlation bounded by the ephemeris'
# uncertainty; the mean is a mean; `~shiftstack_ccd.stack.StackResult.write` refuses to
# overwrite unless asked.
result = ss.shift_and_stack(clean, eph, method="mean", sigma_clip=True, size=151)
print(result.stack.unit, result.stack.shape, "target at", np.round(result.target_pixel, 2))

# %%
# The target is where the ephemeris says. Its centroid in the stack, against the truth (the
# centre pixel), in pixels of 0.04 arcsec, and the centroid's expected error at the stack's
# S/N (about :math:`\sqrt{2}\,\sigma_\mathrm{PSF} / (S/N)` per axis, for a background-limited
# source):
cx, cy = result.target_pixel
x, y = centroid_target(result.stack, (cx, cy), box_size=7)
full = result.coverage == len(frames)
snr = aperture_snr(result.stack, (cx, cy), sim.psf_fwhm, region=full)["snr"]
print(f"centroid offset from the ephemeris position: dx = {x - cx:+.3f}, dy = {y - cy:+.3f} "
      "pixel")
print(f"S/N in the stack {snr:.1f}: expected centroid error about "
      f"{np.sqrt(2) * sim.psf_fwhm / 2.355 / snr:.2f} pixel per axis")

# %%
# What the notebook's whole-pixel rounding would have cost: the target's true positions,
# rounded as ``int()`` does, are off by up to one pixel in each frame, which smears the
# target in the stack.
fractional = np.column_stack([sim.truth["x"] % 1, sim.truth["y"] % 1])
print("int() truncation in each frame (pixels):", np.round(fractional.max(axis=1), 2))

# %%
# One frame (the DQ-masked hot pixels blank, cosmic rays as they came), and the stacks on the
# target and on the stars. The ticks point at the target.
half = 40
fx, fy = (int(round(v)) for v in (sim.truth["x"][0], sim.truth["y"][0]))
ix, iy = int(round(cx)), int(round(cy))
fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
plot_image(axes[0], first[fy - half:fy + half + 1, fx - half:fx + half + 1],
           title="one DRC frame",
           mark=(sim.truth["x"][0] - fx + half, sim.truth["y"][0] - fy + half))
plot_image(axes[1], result.stack[iy - half:iy + half + 1, ix - half:ix + half + 1],
           title="8 frames on the target", mark=(half, half))
plot_image(axes[2], result.sky_stack[iy - half:iy + half + 1, ix - half:ix + half + 1],
           title="8 frames on the stars")
fig.tight_layout()

# %%
# Writing the result
# ------------------
# One multi-extension FITS file (the stack, its uncertainty, mask, coverage, the sky stack
# and the per-frame table); a second write to the same name is refused:
result.write(folder / "stack.fits")
try:
    result.write(folder / "stack.fits")
except ss.exceptions.OutputExistsError as exc:
    print("refused:", exc)
