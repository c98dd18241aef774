"""
A whole reduction from a pipeline file, with dask
=================================================

A pipeline file (TOML, see :doc:`/pipelines`) describes a reduction from raw frames to the
stack: the inputs, the ccdproc calibration, the per-frame steps, the motion model, the stack
options and the outputs. ``shiftstack-ccd run file.toml`` runs it from a shell;
`~shiftstack_ccd.pipeline.load_pipeline` and `~shiftstack_ccd.pipeline.run_pipeline` run
it from Python. Here it reduces the ten raw Lowell 42-inch frames of (5945) Roachapproach
(see :doc:`plot_2_lowell_night`): overscan and trim from each header, the night's bias and VR
twilight flat, the uncertainty from the header's gain and read noise, cosmic rays cleaned,
and the stack on the asteroid's motion measured from the frames, with the per-frame work
spread over threads by dask (``scheduler = "threads"``).

The file ``docs/examples/lowell.toml`` of the source tree is the same reduction for the
command line (it finds the frames through ``${SHIFTSTACK_CCD_DATA}``); the one below lists
the files that `~shiftstack_ccd.datasets.fetch_example_data` returns, so that it also runs
on downloaded copies.
"""

# %%
# The pipeline file
# -----------------
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from astropy.stats import sigma_clipped_stats

import shiftstack_ccd as ss
from shiftstack_ccd.calibration import (combine_flat, read_calibration_frame,
                                        subtract_overscan_and_trim)
from shiftstack_ccd.pipeline import load_pipeline
from shiftstack_ccd.visualization import plot_image

frames = ss.datasets.fetch_example_data("lowell42-5945", "5945")
bias = ss.datasets.fetch_example_data("lowell42-5945", "zero")[0]
flat = ss.datasets.fetch_example_data("lowell42-5945", "flat")[0]

folder = Path(tempfile.mkdtemp())
text = f"""
[inputs]
files = [{", ".join(repr(str(p)) for p in frames)}]

[calibration]
overscan = "header:BIASSEC"      # the median of each overscan row is subtracted
trim = "header:TRIMSEC"
bias = {str(bias)!r}
flat = {str(flat)!r}             # one VR twilight flat
gain = "header:AGAIN_01"         # e-/ADU, for the frames' uncertainty
read_noise = "header:ARDNS_01"   # e-

[[steps]]
step = "clean_cosmic_rays"
method = "median"
threshold = 5.0

[motion.linear]
# measured on these frames (see the Lowell example); ICRS degrees, UTC, arcsec/hour
ra = 124.6279549
dec = 25.3402805
epoch = "2019-03-26T03:40:00"
ra_rate = 3.7678     # dRA cos(Dec)/dt
dec_rate = -8.2601

[stack]
method = "mean"
size = 201
scheduler = "threads"

[output]
stack = "out/roachapproach.fits"
preview = "out/roachapproach.png"
"""
path = folder / "lowell.toml"
path.write_text(text)

# %%
# Checking, then running
# ----------------------
# The whole file is checked before any frame is read (unknown keys and steps, parameter
# types, missing files or header cards, outputs that exist) and every problem is reported
# at once; ``describe()`` says what will be done:
pipeline = load_pipeline(path)
print("\n".join(pipeline.describe()))

# %%
run = pipeline.run()
result = run.result
print("wrote:", ", ".join(p.name for p in run.outputs.values()))
print("stack header:", {key: result.stack.meta[key] for key in
                        ("NCOMBINE", "SSBIAS", "SSFLAT", "SSPIPE")})
print("cosmic-ray pixels flagged per frame:", [int(n) for n in result.table["cr_flagged"]])

# %%
# The asteroid's centroid in the stack is on the centre pixel, where the motion model puts
# it:
cx, cy = result.target_pixel
x, y = ss.centroid_target(result.stack, (cx, cy))
print(f"centroid - centre: dx = {x - cx:+.3f}, dy = {y - cy:+.3f} pixel")

# %%
# The noise model of the header
# -----------------------------
# The frames' uncertainty comes from the header's gain and read noise
# (`ccdproc.create_deviation`). ``pipeline.frames()`` gives the frames as the stack got
# them (calibrated, cosmic rays cleaned), one at a time. On the sky of the first, the noise
# the header predicts against the pixel-to-pixel scatter actually there (the sigma-clipped
# standard deviation of differences between neighbouring pixels, over the square root of
# two), and the same ratio as the cosmic-ray cleaner measured it (its ``CRNSRAT`` card):
frame = next(pipeline.frames())
gain, read_noise = frame.meta["AGAIN_01"], frame.meta["ARDNS_01"]
level = float(np.median(frame.data))
predicted = float(np.median(frame.uncertainty.array))
scatter = sigma_clipped_stats(np.diff(frame.data, axis=1))[2] / np.sqrt(2)
print(f"gain {gain} e-/ADU, read noise {read_noise} e-, sky {level:.0f} ADU (after the flat)")
print(f"sky noise predicted {predicted:.1f} ADU, measured {scatter:.1f} ADU: ratio "
      f"{scatter / predicted:.2f}, the uncertainties are {100 * (1 - predicted / scatter):.0f} %"
      " too small")
print(f"the cosmic-ray cleaner's measured noise ratio (CRNSRAT): {frame.meta['CRNSRAT']:.2f}")

# %%
# A hole in the stack: a star in the flat
# ---------------------------------------
# The stack has a dark hole near the asteroid. The twilight flat, a single exposure, caught
# a star there; dividing by the flat digs the star's image out of every frame. The hole's
# deepest pixel, its distance from the asteroid, and the star in the flat at the same place
# on the sky (the flat calibrated as the pipeline did, over the median of its surroundings):
data = np.array(result.stack.data, dtype=float)
sky = sigma_clipped_stats(data)[1]
yy, xx = np.indices(data.shape)
near = np.hypot(xx - cx, yy - cy) < 80
depth = np.where(near, data - sky, np.inf)
hy, hx = np.unravel_index(np.argmin(depth), depth.shape)
print(f"hole: {-depth[hy, hx]:.0f} ADU below the sky at pixel ({hx}, {hy}) of the stack, "
      f"{np.hypot(hx - cx, hy - cy):.0f} pixels from the asteroid")

# The flat, calibrated as the pipeline did with the functions of
# shiftstack_ccd.calibration; the frame's WCS was trimmed with its pixels, as the flat was
sections = {"overscan": frame.meta["BIASSEC"], "trim": frame.meta["TRIMSEC"]}
master_bias = subtract_overscan_and_trim(read_calibration_frame(bias), **sections)
master_flat = combine_flat([subtract_overscan_and_trim(read_calibration_frame(flat),
                                                       **sections)], bias=master_bias)
fx, fy = frame.wcs.world_to_pixel(result.stack.wcs.pixel_to_world(hx, hy))
ix, iy = int(round(float(fx))), int(round(float(fy)))
box = np.asarray(master_flat.data[iy - 15:iy + 16, ix - 15:ix + 16], dtype=float)
bump = box[12:19, 12:19].max() / np.median(box) - 1
print(f"in the flat at that place: a source {100 * bump:.1f} % above its surroundings")

# %%
# A second flat, or a flat combined from dithered exposures (`ccdproc.combine` with a median
# rejects the star), would fill the hole; so would masking the flat's stars. The stacks, with
# the asteroid between the ticks and the hole circled:
fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
plot_image(axes[0], result.stack, title="stacked on the asteroid", mark=(cx, cy))
axes[0].add_patch(plt.Circle((hx, hy), 8, fill=False, color="tab:red"))
plot_image(axes[1], result.sky_stack, title="stacked on the stars", mark=(cx, cy))
fig.tight_layout()
