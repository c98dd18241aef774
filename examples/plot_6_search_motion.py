"""
Searching over motions: a mover nobody predicted
================================================

Shift-and-stack needs the target's motion. When it is not known (a new object, or one
whose orbit is too poor to predict), `~shiftstack_ccd.search_motion` stacks the frames
along every trial motion within given ranges of rates, on a grid fine enough that no
motion in between loses more than a set fraction of its S/N, and reports what stands
out: the position and rates of each candidate, its S/N in the mean stack and in the
median stack (a real source is in most frames; a string of outliers of a few frames is
not).

Here nine simulated frames hold a target at S/N 2.5 per frame, invisible in each, moving
at a rate the search is not told.
"""

# %%
# The search
# ----------
import matplotlib.pyplot as plt
from astropy import units as u
from astropy.coordinates import SkyCoord

import shiftstack_ccd as ss
from shiftstack_ccd.visualization import plot_image

sim = ss.datasets.simulate_observation(n_frames=9, target_snr=2.5, seed=7,
                                       target_rate=(-20.0, 12.0) * u.arcsec / u.hour)
print(sim)

rates = (-40, 40) * u.arcsec / u.hour
candidates = ss.search_motion(sim.frames, ra_rate=rates, dec_rate=rates, snr_threshold=5)
meta = candidates.meta
print(f"{meta['n_trajectories']:,} trajectories ({meta['n_motions']} motions, rate step "
      f"{u.Quantity(meta['rate_step'], u.arcsec / u.hour):.2f}): {len(candidates)} "
      "candidate(s)")
print(f"robust scatter of the S/N of empty-sky trajectories: {meta['snr_scatter']:.3f} "
      "(1 when the noise model is right)")
for name in ("ra", "dec"):
    candidates[name].info.format = ".5f"
for name in ("ra_rate", "dec_rate", "snr", "snr_median"):
    candidates[name].info.format = ".1f"
print(candidates["ra", "dec", "ra_rate", "dec_rate", "snr", "snr_median", "n_frames"])

# %%
# Against the truth
# -----------------
# The simulation knows where the target was at the search's reference time, and how fast
# it moved:
best = candidates[0]
reference = meta["reference_time"]
truth = sim.target_at(reference)
found = SkyCoord(best["ra"], best["dec"])
print(f"position off by {truth.separation(found).to(u.arcsec):.2f} "
      f"({(truth.separation(found) / sim.pixel_scale).to(u.one):.2f} pixel)")
print(f"rates found: {best['ra_rate']:.1f}, {best['dec_rate']:.1f}; "
      f"true: {sim.ra_rate:.1f}, {sim.dec_rate:.1f}")

# %%
# The simulation holds one moving target; the distance of each candidate from it says which
# candidates are something else (noise, or the residual of a star), which is why a
# candidate near the threshold is confirmed by other frames before it is believed:
for i, row in enumerate(candidates):
    distance = truth.separation(SkyCoord(row["ra"], row["dec"])) / sim.pixel_scale
    print(f"candidate {i}: S/N {row['snr']:.1f}, {distance.to(u.one):.1f} pixels from the target")

# %%
# From candidate to stack
# -----------------------
# A candidate is a linear motion: stacking on it is an ordinary shift-and-stack.
eph = ss.Ephemeris.linear(found, reference, best["ra_rate"], best["dec_rate"])
result = ss.shift_and_stack(sim.frames, eph, method="mean", sigma_clip=True, size=101)
fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4))
plot_image(axes[0], result.stack, title="on the candidate's motion",
           mark=result.target_pixel)
plot_image(axes[1], result.sky_stack, title="on the stars")
fig.tight_layout()
