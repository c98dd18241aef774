"""Measuring on real frames: honesty of the errors, completeness, the asteroid, timings.

The Lowell frames of (5945) Roachapproach (``$SHIFTSTACK_CCD_DATA/lowell42-5945``) are
calibrated as a user would (ccdproc: trim, bias, Poisson + read-noise uncertainty from the
header's gain and read noise, flat, gain), the asteroid's motion is measured from them, and:

1. the asteroid is measured on the stack (`measure_target`) and reported (ADES PSV, written
   to ``docs/_static/5945_obs.psv``);
2. for several seeds, 30 PSF-matched, trailed fakes at stack S/N 5 to 50 are injected on the
   asteroid's motion, stacked and measured: the table gives chi2/dof of the position and
   flux residuals over the reported errors, and the detections;
3. fakes from S/N 1.5 to 12 give the completeness against (instrumental) magnitude, plotted
   to ``docs/_static/lowell_completeness.png``;
4. the time of `measure_target` per target against photutils' PSF photometry alone and a
   plain aperture sum (the naive path), with peak memory;
5. with ``--refine``: the honesty of 2. again on stacks refined on the asteroid
   (``refine=True``), and a deliberately wrong ephemeris (a few arcsec off, rates off by a
   few "/h) pointed at bright fakes, where the refinement is what finds each one: chi2/dof
   with the refinement's term (`shiftstack_ccd.register.refinement_shift`) and without it,
   once at the frames' mean time (the default reference epoch) and once at the first
   frame's.
6. the shape test (`measure_target`'s ``elongated``): on the fakes of 2. (the right
   motion) how the chi-square is distributed and how many are flagged; then fakes moving
   2-6 "/h off the stack's motion: how many are flagged, and the implied rate error
   against the truth.

Run: ``SHIFTSTACK_CCD_DATA=... python benchmarks/bench_measure.py [--seeds 3] [--no-docs]
[--refine] [--only-refine] [--psf empirical] [--only-honesty] [--only-shape]``
"""

import argparse
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord

import shiftstack_ccd as ss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lowell_helpers import asteroid_motion, calibrated, empty_spots  # noqa: E402 (the tests' chain)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "_static"
ZERO_POINT = 25.0  # instrumental: a flux of 1 electron per frame is magnitude 25


def inject_and_measure(frames, eph, plain, snr, seed, refine=False, psf="moffat"):
    rng = np.random.default_rng(seed)
    positions = empty_spots(plain, len(snr), rng, len(frames))
    noise = ss.measure_target(plain, position=positions, snr_threshold=np.inf)["flux_err"]
    fluxes = snr * np.median(noise.value)
    tref = plain.target_frame.reference_time
    ra_rate, dec_rate = eph.rates_at(tref)
    faked, _ = ss.inject_moving_source(frames, positions, tref, ra_rate, dec_rate,
                                       flux=fluxes, poisson=True, seed=seed, psf=psf)
    result = ss.shift_and_stack(faked, eph, size=601, sigma_clip=True, refine=refine)
    m = ss.measure_target(result, position=positions, wcs_error=0 * u.arcsec)
    return positions, fluxes, m


def without_refinement_term(result):
    """The same stack, its refinement's shift and error left out (for comparison only)."""
    header = result.stack.meta.copy()
    for key in ("SSRFDX", "SSRFDY", "SSRFEX", "SSRFEY"):
        header[key] = 0.0
    stack = result.stack.copy()
    stack.meta = header
    return ss.StackResult(stack, result.sky_stack, result.coverage, result.table,
                          result.target_frame)


def position_chi2(truth, m):
    found = np.asarray(m["detected"])
    dra, ddec = truth[found].spherical_offsets_to(SkyCoord(m["ra"][found], m["dec"][found]))
    return (np.sum((dra / m["ra_err"][found]).decompose().value ** 2),
            np.sum((ddec / m["dec_err"][found]).decompose().value ** 2), int(found.sum()))


def wrong_ephemeris(frames, eph, plain, seed, n_fakes=6):
    """Bright fakes on the asteroid's motion; for each, a stack refined on it from an
    ephemeris 1.5-3" off with rates 2-4 "/h off. Returns the sums of squared pulls
    (RA, Dec; with and without the refinement's term) per reference epoch."""
    from astropy.time import Time
    rng = np.random.default_rng(100 + seed)
    positions = empty_spots(plain, n_fakes, rng, len(frames))
    noise = ss.measure_target(plain, position=positions, snr_threshold=np.inf)["flux_err"]
    snr = np.geomspace(30, 60, n_fakes)  # 9.5-19 per frame: the refinement sees each frame
    fluxes = snr * np.median(noise.value)
    tref = plain.target_frame.reference_time
    ra_rate, dec_rate = eph.rates_at(tref)
    faked, _ = ss.inject_moving_source(frames, positions, tref, ra_rate, dec_rate,
                                       flux=fluxes, poisson=True, seed=seed)
    times = Time([ss.mid_exposure_time(f) for f in frames])
    sums = {}
    for k in range(n_fakes):
        angle = rng.uniform(0, 2 * np.pi)
        off = rng.uniform(1.5, 3.0) * u.arcsec
        rate_angle = rng.uniform(0, 2 * np.pi)
        rate_off = rng.uniform(2.0, 4.0) * u.arcsec / u.hour
        start = positions[k].spherical_offsets_by(off * np.cos(angle), off * np.sin(angle))
        wrong = ss.Ephemeris.linear(start, tref, ra_rate + rate_off * np.cos(rate_angle),
                                    dec_rate + rate_off * np.sin(rate_angle))
        true = ss.Ephemeris.linear(positions[k], tref, ra_rate, dec_rate)
        for label, epoch in (("mean time", None), ("first frame", times[0])):
            # the static sky subtracted first, else a star's trail in the refinement's
            # cutout can outshine the fake in the cross-correlation
            result = ss.shift_and_stack(faked, wrong, size=301, sigma_clip=True, refine=True,
                                        refine_max_shift=5.0, reference_time=epoch,
                                        subtract_static=True)
            refined = int(result.stack.meta["SSRFNOK"])
            if refined < 3:  # not found frame by frame: its ephemeris error is nobody's
                sums.setdefault(("not refined", label), 0)
                sums[("not refined", label)] += 1
                continue
            truth = true.at(result.target_frame.reference_time)
            truth = SkyCoord([truth.ra], [truth.dec])
            for term, r in (("with", result), ("without", without_refinement_term(result))):
                m = ss.measure_target(r, search_radius=4.0 * u.arcsec,
                                      wcs_error=0 * u.arcsec)
                ra2, dec2, n = position_chi2(truth, m)
                acc = sums.setdefault((label, term), [0.0, 0.0, 0, 0])
                acc[0] += ra2
                acc[1] += dec2
                acc[2] += n
                acc[3] += 1
            shift = np.hypot(result.stack.meta["SSRFDX"], result.stack.meta["SSRFDY"])
            print(f"     fake {k} ({label}): {refined} frames "
                  f"refined, shift to the epoch {shift:.2f} px +- "
                  f"{result.stack.meta['SSRFEX']:.3f}/{result.stack.meta['SSRFEY']:.3f}")
    return sums


def honesty(positions, fluxes, m, snr):
    found = np.asarray(m["detected"])
    dra, ddec = positions[found].spherical_offsets_to(SkyCoord(m["ra"][found],
                                                               m["dec"][found]))
    pull_ra = (dra / m["ra_err"][found]).decompose().value
    pull_dec = (ddec / m["dec_err"][found]).decompose().value
    pull_flux = (m["flux"].value - fluxes) / m["flux_err"].value
    return {"chi2_ra": np.mean(pull_ra ** 2), "chi2_dec": np.mean(pull_dec ** 2),
            "chi2_flux": np.mean(pull_flux ** 2), "bias_flux": np.mean(pull_flux),
            "detected": int(found.sum()), "n": len(found),
            "detected_8": int(found[snr >= 8].sum()), "n_8": int((snr >= 8).sum()),
            "elongated": int(np.sum(m["elongated"])), "n_10": int(np.sum(snr >= 10)),
            "shape_chi2": np.asarray(m["shape_chi2"])[np.asarray(m["snr"]) >= 10]}


def timings(plain, positions):
    from photutils.aperture import CircularAperture, aperture_photometry
    from photutils.psf import CircularGaussianPRF, PSFPhotometry
    from astropy.table import QTable
    xy = np.column_stack([np.asarray(v) for v in plain.stack.wcs.world_to_pixel(positions)])
    rows = []
    tracemalloc.start()
    start = time.perf_counter()
    ss.measure_target(plain, position=positions)
    ours = (time.perf_counter() - start) / len(xy)
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    rows.append(("measure_target (PSF from stars, noise model, errors)", ours, peak))
    data = np.nan_to_num(plain.stack.data)
    start = time.perf_counter()
    phot = PSFPhotometry(CircularGaussianPRF(fwhm=1.8), fit_shape=(7, 7), aperture_radius=3)
    phot(data, error=plain.stack.uncertainty.array,
         init_params=QTable({"x": xy[:, 0], "y": xy[:, 1]}))
    rows.append(("photutils PSFPhotometry alone (no PSF, no honest errors)",
                 (time.perf_counter() - start) / len(xy), np.nan))
    start = time.perf_counter()
    aperture_photometry(data, CircularAperture(xy, 3.0))
    rows.append(("plain aperture sum (naive)", (time.perf_counter() - start) / len(xy),
                 np.nan))
    return rows


def refined_honesty(frames, eph, plain, seeds, first_seed=0):
    print("\nRefined on the asteroid (refine=True), fakes at stack S/N 5-50 (30 per seed):")
    print(f"{'seed':>4} {'chi2 RA':>8} {'chi2 Dec':>8} {'chi2 flux':>9} {'flux bias':>9} "
          f"{'detected':>9} {'S/N>=8':>7}   (chi2 RA, Dec without the refinement's term)")
    snr = np.geomspace(5, 50, 30)
    for seed in range(first_seed, first_seed + seeds):
        positions, fluxes, m = inject_and_measure(frames, eph, plain, snr, seed, refine=True)
        h = honesty(positions, fluxes, m, snr)
        print(f"{seed:>4} {h['chi2_ra']:8.2f} {h['chi2_dec']:8.2f} {h['chi2_flux']:9.2f} "
              f"{h['bias_flux']:+9.2f} {h['detected']:>4}/{h['n']:<4} "
              f"{h['detected_8']:>3}/{h['n_8']}   refinement error "
              f"{m.meta['refine_error_pix'][0]:.4f}, {m.meta['refine_error_pix'][1]:.4f} px")
    print("\nWrong ephemeris (1.5-3\" off, rates 2-4 \"/h off), refine=True on bright fakes:")
    totals = {}
    for seed in range(first_seed, first_seed + seeds):
        for key, acc in wrong_ephemeris(frames, eph, plain, seed).items():
            if key[0] == "not refined":
                totals[key] = totals.get(key, 0) + acc
                continue
            total = totals.setdefault(key, [0.0, 0.0, 0, 0])
            for i in range(4):
                total[i] += acc[i]
    for (label, term), acc in sorted(totals.items()):
        if label == "not refined":
            print(f"  at the {term}: {acc} stacks refined on fewer than 3 frames, left out")
            continue
        ra2, dec2, n, tries = acc
        print(f"  reference epoch at the {label}, {term} the refinement's term: chi2/dof RA "
              f"{ra2 / max(n, 1):.2f}, Dec {dec2 / max(n, 1):.2f} ({n}/{tries} detected)")


def wrong_rates(frames, eph, plain, seeds, n_fakes=30):
    """6. The shape test: fakes at stack S/N 10-50 moving 2-6 "/h off the stack's motion
    (random directions), stacked on the asteroid's motion. How many are flagged elongated,
    and how close the implied rate error is to the truth (up to its sign)."""
    snr = np.geomspace(10, 50, n_fakes)
    tref = plain.target_frame.reference_time
    ra_rate, dec_rate = eph.rates_at(tref)
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(100 + seed)
        positions = empty_spots(plain, n_fakes, rng, len(frames))
        noise = ss.measure_target(plain, position=positions, snr_threshold=np.inf)["flux_err"]
        fluxes = snr * np.median(noise.value)
        size = rng.uniform(2.0, 6.0, n_fakes)
        angle = rng.uniform(0.0, 2 * np.pi, n_fakes)
        off = np.array([size * np.cos(angle), size * np.sin(angle)])  # "/h
        faked, _ = ss.inject_moving_source(frames, positions, tref,
                                           ra_rate + off[0] * u.arcsec / u.hour,
                                           dec_rate + off[1] * u.arcsec / u.hour,
                                           flux=fluxes, poisson=True, seed=seed)
        result = ss.shift_and_stack(faked, eph, size=601, sigma_clip=True)
        m = ss.measure_target(result, position=positions, wcs_error=0 * u.arcsec)
        est = np.array([m["rate_error_ra"].value, m["rate_error_dec"].value])
        miss = np.minimum(np.hypot(*(est - off)), np.hypot(*(est + off))) / size
        rows.append(np.column_stack([snr, size, np.asarray(m["elongated"]),
                                     np.asarray(m["detected"]), miss]))
    rows = np.concatenate(rows)
    print(f"\nShape test, fakes moving 2-6\"/h off the stack's motion ({len(seeds)} seeds x "
          f"{n_fakes}, stack S/N 10-50 if on the motion; flagged/detected):")
    print(f"{'rate off':>10} {'S/N 10-20':>10} {'S/N 20-35':>10} {'S/N 35-50':>10}")
    for lo, hi in ((2, 3), (3, 4), (4, 6)):
        cells = []
        for slo, shi in ((10, 20), (20, 35), (35, 51)):
            pick = (rows[:, 1] >= lo) & (rows[:, 1] < hi) & (rows[:, 0] >= slo) \
                & (rows[:, 0] < shi)
            cells.append(f"{int(rows[pick, 2].sum())}/{int(rows[pick, 3].sum())}")
        print(f"{f'{lo}-{hi}':>10} " + " ".join(f"{c:>10}" for c in cells))
    flagged = rows[:, 2] > 0
    miss = rows[flagged, 4]
    none = int(np.sum(np.isnan(miss)))
    miss = miss[np.isfinite(miss)]
    print(f"  implied rate error against the truth (up to sign), {flagged.sum()} flagged: "
          f"median {np.median(miss):.2f}, 90th percentile {np.percentile(miss, 90):.2f}, "
          f"largest {miss.max():.2f} of the true error; {none} elongated along no trail")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="first seed of the refined runs (more samples: other seeds)")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/_static")
    parser.add_argument("--refine", action="store_true",
                        help="also the honesty on stacks refined on the target")
    parser.add_argument("--only-refine", action="store_true",
                        help="only the refined honesty (implies --refine)")
    parser.add_argument("--psf", choices=("moffat", "empirical"), default="moffat",
                        help="the fakes' PSF: a Moffat fitted to each frame's stars, or "
                             "each frame's effective PSF (photutils EPSFBuilder)")
    parser.add_argument("--only-honesty", action="store_true",
                        help="only the honesty table (2.)")
    parser.add_argument("--only-shape", action="store_true",
                        help="only the shape test's false alarms (2.) and detections (6.)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    folder = ss.get_data_path("lowell42-5945")
    start = time.perf_counter()
    raw, frames = calibrated(folder)
    track, eph = asteroid_motion(raw, frames)
    plain = ss.shift_and_stack(frames, eph, size=601, sigma_clip=True)
    print(f"calibrated, tracked and stacked in {time.perf_counter() - start:.1f} s")

    if args.refine or args.only_refine:
        refined_honesty(frames, eph, plain, args.seeds, args.first_seed)
        if args.only_refine:
            return
    if args.only_shape:
        args.only_honesty = args.no_docs = True
    m = ss.measure_target(plain)
    row = m[0]
    truth = eph.at(row["time"])
    print("\n(5945) Roachapproach on the stack:")
    print(f"  {ss.summary_line(row, m.meta)}")
    print(f"  RA {row['ra'].value:.7f} Dec {row['dec'].value:+.7f} at {row['time'].isot} UTC; "
          f"{truth.separation(SkyCoord(row['ra'], row['dec'])).to_value(u.arcsec):.3f}\" "
          "from the line through its ten centroids")
    print(f"  flux {row['flux'].value:.0f} +- {row['flux_err'].value:.0f} e- per frame "
          f"(PSF, aperture-corrected x{m.meta['aperture_correction']:.3f}); aperture "
          f"{row['aperture_flux'].value:.0f} +- {row['aperture_flux_err'].value:.0f}")
    print(f"  errors {row['ra_err'].value:.3f}\", {row['dec_err'].value:.3f}\" (WCS "
          f"{m.meta['wcs_error_arcsec']:.3f}\"); FWHM {row['fwhm'].value:.2f}\"; 5-sigma limit "
          f"{row['flux_limit'].value:.0f} e-; noise / naive noise "
          f"{m.meta['noise_ratio'][0]:.2f}")
    if not args.no_docs:
        path = DOCS / "5945_obs.psv"
        ss.write_ades(m, path, stn="688", submitter="A. Example", observers=["B. A. Skiff"],
                      measurers=["A. Example"], obj=5945, ast_cat="Gaia2",
                      telescope={"name": "Hall 42-inch", "design": "Reflector",
                                 "aperture": 1.07, "detector": "CCD"}, overwrite=True)
        print(f"  wrote {path}")

    print(f"\nInjected fakes ({args.psf} PSF), stack S/N 5-50 (30 per seed): reported errors "
          "against scatter")
    print(f"{'seed':>4} {'chi2 RA':>8} {'chi2 Dec':>8} {'chi2 flux':>9} {'flux bias':>9} "
          f"{'detected':>9} {'S/N>=8':>7} {'elongated S/N>=10':>18}")
    snr = np.geomspace(5, 50, 30)
    shape_chi2 = []
    for seed in range(args.seeds):
        positions, fluxes, measured = inject_and_measure(frames, eph, plain, snr, seed,
                                                         psf=args.psf)
        h = honesty(positions, fluxes, measured, snr)
        shape_chi2.append(h["shape_chi2"])
        print(f"{seed:>4} {h['chi2_ra']:8.2f} {h['chi2_dec']:8.2f} {h['chi2_flux']:9.2f} "
              f"{h['bias_flux']:+9.2f} {h['detected']:>4}/{h['n']:<4} "
              f"{h['detected_8']:>3}/{h['n_8']} {h['elongated']:>14}/{h['n_10']}")

    chi2 = np.concatenate(shape_chi2)
    chi2 = chi2[np.isfinite(chi2)]
    print(f"  shape test of the fakes measured at S/N >= 10 ({len(chi2)}): chi2 mean "
          f"{np.mean(chi2):.2f} (2 expected), beyond the 5% point (5.99) "
          f"{np.sum(chi2 > 5.99)}, beyond the 1% point (9.21) {np.sum(chi2 > 9.21)}, "
          f"beyond 13.8 (0.1%) {np.sum(chi2 > 13.8)}, flagged (18.4) {np.sum(chi2 > 18.4)}")
    if args.only_honesty and not args.only_shape:
        return
    wrong_rates(frames, eph, plain, range(args.seeds))
    if args.only_honesty:
        return
    print("\nCompleteness (fakes at S/N 1.5-12, 2 x 30):")
    mags, found = [], []
    faint = np.geomspace(1.5, 12, 30)
    for seed in (10, 11):
        positions, fluxes, measured = inject_and_measure(frames, eph, plain, faint, seed)
        mags.append(ZERO_POINT - 2.5 * np.log10(fluxes))
        found.append(np.asarray(measured["detected"]))
    table = ss.completeness(np.concatenate(mags) * u.mag, np.concatenate(found), bins=6)
    for r in table:
        print(f"  {r['mag_lo'].value:.2f}-{r['mag_hi'].value:.2f} mag: "
              f"{r['n_detected']}/{r['n']} = {r['fraction']:.2f}")
    print(f"  50% at {table.meta['mag_50']:.2f} (instrumental, 25 = 1 e- per frame); the "
          f"5-sigma limit is {ZERO_POINT - 2.5 * np.log10(row['flux_limit'].value):.2f}")
    if not args.no_docs:
        import matplotlib
        matplotlib.use("agg")
        ax = ss.plot_completeness(table, xlabel="instrumental magnitude (25 = 1 e- per frame)")
        ax.axvline(ZERO_POINT - 2.5 * np.log10(row["flux_limit"].value), color="C3", lw=1,
                   ls=":", label="5-sigma limit")
        ax.legend()
        ax.set_title("(5945) field, Lowell 42-inch: fakes recovered")
        ax.figure.tight_layout()
        ax.figure.savefig(DOCS / "lowell_completeness.png", dpi=100)
        print(f"  wrote {DOCS / 'lowell_completeness.png'}")

    print("\nTime per target (30 positions on the 601 x 601 stack):")
    spots = empty_spots(plain, 30, np.random.default_rng(9), len(frames))
    for name, seconds, peak in timings(plain, spots):
        memory = f", peak {peak:.0f} MiB" if np.isfinite(peak) else ""
        print(f"  {name}: {1e3 * seconds:.1f} ms{memory}")


if __name__ == "__main__":
    main()
