"""
Measuring the target and reporting it in ADES
=============================================

A stack is made to be measured: `~shiftstack_ccd.measure_target` finds the target near
its predicted place on the stack, fits the stack's own PSF (measured on the stars of the
sky stack, trailed by the target's motion during the exposures) and gives its position,
flux and S/N with errors from the stack's measured noise, correlations between resampled
pixels included. `~shiftstack_ccd.write_ades` writes the measurement as an IAU ADES
observation (PSV or XML) for the Minor Planet Center.

First on simulated frames, where the truth is known, then on the real Lowell night.
"""

# %%
# On simulated frames: are the errors honest?
# -------------------------------------------
# Nine frames of a target at S/N 3 per frame. The stack's reference time is the middle
# frame's, where the simulation knows the target's position exactly.
import tempfile
from pathlib import Path

from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.time import Time

import shiftstack_ccd as ss

sim = ss.datasets.simulate_observation(n_frames=9, target_snr=3.0, seed=3,
                                       target_rate=(-28.0, 9.0) * u.arcsec / u.hour)
result = ss.shift_and_stack(sim.frames, sim.ephemeris, method="mean", sigma_clip=True)
m = ss.measure_target(result)
row = m[0]
truth = sim.target_at(row["time"])
dra, ddec = truth.spherical_offsets_to(SkyCoord(row["ra"], row["dec"]))
print(f"detected: {row['detected']}, S/N {row['snr']:.1f}")
print(f"position - truth: RA {dra.to(u.arcsec):.3f} ({(dra / row['ra_err']).to(u.one):+.1f} "
      f"sigma), Dec {ddec.to(u.arcsec):.3f} ({(ddec / row['dec_err']).to(u.one):+.1f} sigma)")
true_flux = float(sim.truth["flux"][0]) / sim.gain  # ADU per frame, as in the mean stack
print(f"flux {row['flux'].value:.0f} +/- {row['flux_err'].value:.0f} ADU; truth {true_flux:.0f}"
      f" ({(row['flux'].value - true_flux) / row['flux_err'].value:+.1f} sigma)")

# %%
# The real night
# --------------
# The Lowell frames of (5945) Roachapproach (see the Lowell example), stacked on the motion
# measured from them:
frames = ss.read_frames(ss.datasets.fetch_example_data("lowell42-5945"))
eph = ss.Ephemeris.linear(SkyCoord(124.6279549, 25.3402805, unit="deg"),
                          Time("2019-03-26T03:40:00", scale="utc"),
                          3.7678 * u.arcsec / u.hour, -8.2601 * u.arcsec / u.hour)
result = ss.shift_and_stack(frames, eph, method="mean", size=301)
m = ss.measure_target(result)
row = m[0]
print(f"{row['time'].isot} UTC: RA {row['ra'].to_value(u.deg):.6f} +/- {row['ra_err']:.3f}, "
      f"Dec {row['dec'].to_value(u.deg):+.6f} +/- {row['dec_err']:.3f}")
print(f"S/N {row['snr']:.0f}, FWHM {row['fwhm']:.2f}, {row['offset']:.3f} from the prediction")

# %%
# `~shiftstack_ccd.summary_line` says the same in one line, as ``shiftstack-ccd stack``
# ends:
print(ss.summary_line(row, m.meta))

# %%
# A wrong motion
# --------------
# Rates with the wrong signs (a slip when copying them): the asteroid is smeared into a
# line of faint images, one per frame, and the stack's centre falls between them. The
# measurement still finds a blend of some of them, "detected", but off the prediction by
# a good part of the FWHM (the asteroid on its motion is within a few hundredths of an
# arcsecond) and with a fraction of the flux. Its shape gives it away: elongated far
# beyond the stars' PSF, so the summary line says "ELONGATED" with the rate error that
# such a trail implies over the stack's time span (here twice the true rates, up to the
# sign, which a stack cannot tell), and a warning names the stack. Where the prediction
# falls on empty sky the line says "not detected" and gives the 5-sigma limit instead.
wrong_eph = ss.Ephemeris.linear(SkyCoord(124.6279549, 25.3402805, unit="deg"),
                                Time("2019-03-26T03:40:00", scale="utc"),
                                -3.7678 * u.arcsec / u.hour, 8.2601 * u.arcsec / u.hour)
wrong = ss.measure_target(ss.shift_and_stack(frames, wrong_eph, method="mean", size=301))
print(ss.summary_line(wrong[0], wrong.meta))
print(f"offset {(wrong[0]['offset'] / row['fwhm']).to(u.one):.1f} FWHM; flux "
      f"{(wrong[0]['flux'] / row['flux']).to(u.one):.2f} of the asteroid's; elongated: "
      f"{wrong[0]['elongated']}; rate error +-({wrong[0]['rate_error_ra']:.1f}, "
      f"{wrong[0]['rate_error_dec']:.1f}), the true one +-(7.5, -16.5) arcsec / h")
north = SkyCoord(row["ra"], row["dec"]).spherical_offsets_by(0 * u.arcsec, 15 * u.arcsec)
empty = ss.measure_target(result, position=north)
print("15 arcsec north of the asteroid:", ss.summary_line(empty[0], empty.meta))

# %%
# The position error is dominated by the frames' astrometric solution (its ``ASTRRMS``
# cards, taken as the WCS error), not by the centroid. The motion being measured on the
# same frames, the offset from the prediction says nothing about the orbit; against JPL
# Horizons (``ss.Ephemeris.from_horizons("5945", location="688", times=...)``, network
# needed) it would. Without a photometric catalogue there is no magnitude: with network,
# ``measure_target(result, catalog="gaia")`` fits a zero point on the field's Gaia stars.
#
# The ADES report
# ---------------
# The WCS was registered on Gaia (the frames' ``REGCAT`` card); the telescope is the Lowell
# 42-inch (1.07 m) Hall reflector, MPC site 688; the observer is in the ``OBSERVER`` card.
path = Path(tempfile.mkdtemp()) / "roachapproach.psv"
ss.write_ades(m, path, stn="688", submitter="A. Measurer", observers=["B. Skiff"],
              measurers=["A. Measurer"], obj=5945, ast_cat="Gaia2",
              telescope={"design": "Reflector", "aperture": 1.07, "detector": "CCD"})
print(path.read_text())
