"""
A real night: (5945) Roachapproach from Lowell, step by step
=============================================================

Ten consecutive 300 s exposures in the VR filter of the main-belt asteroid (5945)
Roachapproach, taken on 2019 March 26 with the Lowell 42-inch Hall telescope (NASA42 CCD,
binned 3 x 3). The frames are raw (ADU; bias and flat not applied) and carry a SCAMP
astrometric solution whose numbers are written as quoted strings, a ``DATE-OBS`` without a
time, and the start time in ``UTCSTART``.

No ephemeris is assumed: the asteroid's motion is measured from the frames themselves, then
the frames are stacked on it.

The frames are public teaching material (GitHub ``LowellObservatory/DeadParrots``, folder
``Asteroid_Photometry/data/``). `~shiftstack_ccd.datasets.fetch_example_data` finds them
under the folder named by the environment variable ``SHIFTSTACK_CCD_DATA``, or else
downloads them once (about 40 MB) into the astropy cache.
"""

# %%
# Reading
# -------
# `~shiftstack_ccd.read_frames` casts the quoted WCS numbers to floats (astropy alone would
# build a WCS with ``CRVAL = 0`` and a unit matrix, with only a warning), keeps SCAMP's
# ``PV`` distortion, and finds the mid-exposure time from ``DATE-OBS``, ``UTCSTART`` and
# ``EXPTIME``, saying which cards it used.
import matplotlib.pyplot as plt
import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.modeling.fitting import TRFLSQFitter
from astropy.modeling.models import Const2D, Gaussian2D
from astropy.time import Time
from astropy.wcs.utils import proj_plane_pixel_scales

import shiftstack_ccd as ss
from shiftstack_ccd.ephemeris.motion import fit_linear_motion, track_target
from shiftstack_ccd.stars import detect_stars, measure_fwhm
from shiftstack_ccd.visualization import plot_image

files = ss.datasets.fetch_example_data("lowell42-5945")
frames = ss.read_frames(files)
print(f"{len(frames)} frames of {frames[0].shape[1]} x {frames[0].shape[0]} pixels, "
      f"unit {frames[0].unit}")

times = Time([ss.mid_exposure_time(f) for f in frames])
print("first mid-exposure time:", times[0].isot, "from",
      ss.mid_exposure_time(frames[0]).info.description)
print("last mid-exposure time: ", times[-1].isot)

# %%
# The observatory's pipeline wrote its own mid-exposure time, ``MIDTIMJD``, a Julian Date
# (despite its name): the two agree.
midtimjd = Time([f.meta["MIDTIMJD"] for f in frames], format="jd", scale="utc")
print(f"largest difference from MIDTIMJD: {np.max(np.abs((times - midtimjd).to(u.ms))):.2f}")

# %%
# The pixel scale and orientation come from the WCS (after the repair), not from a nominal
# value:
scales = proj_plane_pixel_scales(frames[0].wcs.celestial) * 3600
cd = frames[0].wcs.celestial.pixel_scale_matrix
rotation = np.degrees(np.arctan2(cd[1, 0], cd[1, 1]))
print(f"pixel scale: {scales[0]:.3f} x {scales[1]:.3f} arcsec; +y is {rotation:.1f} deg "
      "east of north")

# %%
# Finding the asteroid
# --------------------
# Blinking the first and last frames shows one source that moved: in the first frame it is
# near RA 124.6270, Dec 25.3412 and in the last near RA 124.6278, Dec 25.3394 (rough
# positions, read off the images with any viewer). Without them,
# `~shiftstack_ccd.search_motion` finds it among all the field's movers (see
# :doc:`plot_6_search_motion`); when it is known, its ephemeris comes from JPL Horizons
# (``ss.Ephemeris.from_horizons("5945", location="688", times=times)``; Lowell is site
# 688).
first = SkyCoord(124.6270, 25.3412, unit="deg")
last = SkyCoord(124.6278, 25.3394, unit="deg")

half = 25
fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
for ax, index, guess in zip(axes, (0, -1), (first, last)):
    x, y = frames[index].wcs.world_to_pixel(first)
    ix, iy = int(round(float(x))), int(round(float(y)))
    gx, gy = frames[index].wcs.world_to_pixel(guess)
    plot_image(ax, frames[index].data[iy - half:iy + half + 1, ix - half:ix + half + 1],
               title=f"frame {index % len(frames) + 1}, {times[index].isot[11:19]} UTC",
               mark=(float(gx) - ix + half, float(gy) - iy + half))
fig.tight_layout()

# %%
# Measuring the motion
# --------------------
# `~shiftstack_ccd.ephemeris.motion.track_target` centroids the asteroid in every frame,
# starting from the two rough positions, and
# `~shiftstack_ccd.ephemeris.motion.fit_linear_motion` fits a straight line at constant
# rate through the ten positions:
track = track_target(frames, first, last)
eph = fit_linear_motion(track["time"], SkyCoord(track["ra"], track["dec"], unit="deg"))
ra_rate, dec_rate = eph.rates_at(track["time"][0])
print(f"rates: dRA cos(Dec)/dt = {ra_rate:.3f}, dDec/dt = {dec_rate:.3f}")
print(f"the ten positions lie on the line to {eph.meta['fit_rms']:.3f} arcsec rms "
      f"({eph.meta['fit_rms'] / scales.mean():.3f} pixel)")
step = np.hypot(ra_rate, dec_rate) * (track["time"][1] - track["time"][0])
print(f"motion between frames: {(step / (scales.mean() * u.arcsec)).to(u.one):.2f} pixel")

# %%
# Stacking
# --------
# Every frame goes through the warp path (the frames are rotated and carry the TPV
# distortion), the data interpolated by a cubic spline. ``size=201`` cuts a 201 x 201 pixel
# grid around the target.
result = ss.shift_and_stack(frames, eph, method="mean", size=201)
print("resampling paths:", sorted(set(str(p) for p in result.table["resample"])))
print("frames covering the centre:", result.coverage[100, 100])

# %%
# In the stack on the asteroid's motion the asteroid is as compact as in one frame, while
# in the stack on the stars (``result.sky_stack``) it is trailed. The asteroid's FWHM, from
# a 2-D Gaussian fit:
single = [measure_fwhm(f, (x, y)) for f, x, y in zip(frames, track["x"], track["y"])]
cx, cy = result.target_pixel
stacked = measure_fwhm(result.stack, (cx, cy))
print(f"FWHM in the ten frames (median): {np.median(single):.2f} pixel")
print(f"FWHM in the stack on the asteroid: {stacked:.2f} pixel "
      f"({100 * (stacked / np.median(single) - 1):+.0f} %)")

# %%
# The seeing is barely sampled, so the interpolation broadens the asteroid a little; a
# bilinear interpolation would broaden it more (the reason the cubic spline is the
# default):
bilinear = ss.shift_and_stack(frames, eph, method="mean", size=201, sky_stack=False,
                              interpolation="bilinear")
print(f"FWHM with bilinear interpolation: {measure_fwhm(bilinear.stack, (cx, cy)):.2f} pixel")

# %%
# Round or trailed
# ----------------
# The shape of a source, from an elliptical 2-D Gaussian fitted to a cutout: the
# elongation (major over minor axis) and the direction of the major axis, compared with the
# asteroid's direction of motion on the stack (a trail is a line convolved with the PSF,
# which comes out as an elongated Gaussian along the line).


def shape(image, x, y, half=8):
    """Elongation and major-axis angle (degrees from +x, modulo 180) of a source."""
    xi, yi = int(round(x)), int(round(y))
    cut = np.array(image[yi - half:yi + half + 1, xi - half:xi + half + 1], dtype=float)
    yy, xx = np.indices(cut.shape)
    sky = np.nanmedian(cut)
    model = Gaussian2D(np.nanmax(cut) - sky, x - xi + half, y - yi + half, 1.5, 1.5) \
        + Const2D(sky)
    good = np.isfinite(cut)
    fit = TRFLSQFitter()(model, xx[good], yy[good], cut[good])
    sx, sy, theta = abs(fit.x_stddev_0.value), abs(fit.y_stddev_0.value), fit.theta_0.value
    if sy > sx:
        sx, sy, theta = sy, sx, theta + np.pi / 2
    return sx / sy, np.degrees(theta) % 180


dx, dy = result.table["dx"], result.table["dy"]
motion = np.degrees(np.arctan2(dy[-1] - dy[0], dx[-1] - dx[0])) % 180
print(f"the asteroid's motion on the stack: {motion:.0f} deg from +x")
for name, image in (("asteroid's motion", result.stack), ("stars", result.sky_stack)):
    elongation, angle = shape(image.data, cx, cy)
    print(f"asteroid in the stack on the {name}: elongation {elongation:.2f}, "
          f"major axis at {angle:.0f} deg")

# %%
# and bright, isolated stars (no other source within 16 pixels; hot pixels, narrower than
# the seeing, left out), in both stacks:
found = detect_stars(result.sky_stack, threshold=30)
xy = np.column_stack([found["x"], found["y"]])
stars = []
for i, (x, y) in enumerate(xy):
    others = np.delete(xy, i, axis=0)
    if (12 < x < 189 and 12 < y < 189 and np.hypot(x - cx, y - cy) > 20
            and np.min(np.hypot(*(others - (x, y)).T)) > 16
            and measure_fwhm(result.sky_stack, (x, y)) > 1.4):
        stars.append((x, y))
on_target = np.array([shape(result.stack.data, x, y) for x, y in stars])
on_stars = np.array([shape(result.sky_stack.data, x, y) for x, y in stars])
print(f"{len(stars)} stars: elongation {on_stars[:, 0].min():.2f} to "
      f"{on_stars[:, 0].max():.2f} in the stack on the stars, "
      f"{on_target[:, 0].min():.2f} to {on_target[:, 0].max():.2f} in the stack on the "
      f"asteroid, major axis at {on_target[:, 1].min():.0f} to {on_target[:, 1].max():.0f} deg")

# %%
# The two stacks
# --------------
# The ticks point at the asteroid. The frames being raw, their hot pixels and the dust
# rings of the flat field are left in both stacks; the pipeline example calibrates them
# first with ccdproc.
fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
plot_image(axes[0], result.stack, title="10 frames on the asteroid's motion", mark=(cx, cy))
plot_image(axes[1], result.sky_stack, title="10 frames on the stars", mark=(cx, cy))
fig.tight_layout()
