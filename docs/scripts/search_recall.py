"""Recall of search_motion against S/N, on the raw Lowell frames with injected fakes.

Makes ``docs/_static/search_recall.png`` and prints the table behind it. Fakes (Moffat PSF,
FWHM 2 pixels, beta 3, trailed) are injected with `shiftstack_ccd.inject_moving_source`
into the full field of the ten raw Lowell frames of (5945), at random positions and random
rates across +-40 arcsec/h (moving at least 8 arcsec/h, i.e. 2 FWHM over the frames), with
fluxes spanning stack S/N 3 to 15. The S/N on the x axis is the optimal (matched-filter)
S/N of each fake in the stack of the ten frames, from its flux, its PSF and each frame's
noise measured where it lies (robust scatter of neighbouring-pixel differences / sqrt 2).
A fake is found when a candidate lies within 1.5 arcsec and 4 arcsec/h of its truth.

Run: ``SHIFTSTACK_CCD_DATA=/work/shared/data python docs/scripts/search_recall.py``
(several minutes: each run searches the whole field). With ``--fastest`` the fakes move at
25 to 40 arcsec/h on both axes (the corners of the box: trails of 1.6 to 2.6 FWHM in the
300 s frames) and the figure is not written. Each run also prints the median of the found
S/N over the optimal one and of the found flux over the injected one. A missed fake whose
path passes near a saturated star says so: the optimal S/N ignores the search's masks.
"""

import glob
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import QTable, vstack
from astropy.time import Time

import shiftstack_ccd as ss

RATE = u.arcsec / u.hour
OUT = Path(__file__).resolve().parents[1] / "_static" / "search_recall.png"


def moffat_sum_p2(fwhm, beta, half=15, oversample=5):
    """Sum over pixels of the squared unit-flux pixel-integrated Moffat PSF."""
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    n = (2 * half + 1) * oversample
    c = (np.arange(n) + 0.5) / oversample - (half + 0.5)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    fine = (1 + (xx ** 2 + yy ** 2) / alpha ** 2) ** -beta
    pix = fine.reshape(2 * half + 1, oversample, 2 * half + 1, oversample).sum(axis=(1, 3))
    pix /= pix.sum()
    return float(np.sum(pix ** 2))


def pixel_noise(frame, x, y, half=40):
    """Robust noise of a raw frame near (x, y): neighbouring-pixel differences / sqrt(2)."""
    ny, nx = frame.shape
    xi, yi = int(round(x)), int(round(y))
    cut = np.asarray(frame.data[max(0, yi - half):yi + half, max(0, xi - half):xi + half],
                     float)
    diff = np.diff(cut, axis=1).ravel()
    q25, q75 = np.percentile(diff, [25, 75])
    return 0.7413 * (q75 - q25) / np.sqrt(2)


def near_saturation(frames, rows, grow=15):
    """Whether a fake's path passes within ``grow`` pixels of a saturated pixel: the search
    masks saturated pixels grown by 6 and bright stars by a FWHM plus two pixels per decade
    of peak S/N above 10 (about 13 pixels about a saturated star here), and what lies under
    the masks cannot be found."""
    for r in rows:
        frame = frames[int(r["frame"])]
        data = np.asarray(frame.data, float)
        level = 0.98 * data.max()
        x, y = int(round(r["x"])), int(round(r["y"]))
        box = data[max(0, y - grow):y + grow + 1, max(0, x - grow):x + grow + 1]
        if box.size and box.max() >= level:
            return True
    return False


def one_run(frames, seed, n_fakes=40, fwhm=2.0, beta=3.0, fastest=False):
    rng = np.random.default_rng(seed)
    times = Time([ss.mid_exposure_time(f) for f in frames])
    epoch = Time(np.mean(times.mjd), format="mjd", scale="utc")
    ny, nx = frames[0].shape
    rates = []
    while len(rates) < n_fakes:
        r = rng.uniform(-40, 40, 2)
        if np.hypot(*r) > 8:
            rates.append(r)
    rates = np.array(rates)
    if fastest:
        rates = rng.uniform(25, 40, (n_fakes, 2)) * rng.choice([-1, 1], (n_fakes, 2))
    # inside the trimmed, unvignetted part of the field, away from the edges
    xy = np.column_stack([rng.uniform(120, 1260, n_fakes), rng.uniform(120, 1250, n_fakes)])
    sky = frames[0].wcs.pixel_to_world(xy[:, 0], xy[:, 1])
    fakes = QTable()
    fakes["ra"], fakes["dec"] = sky.ra.to(u.deg), sky.dec.to(u.deg)
    fakes["ra_rate"], fakes["dec_rate"] = rates[:, 0] * RATE, rates[:, 1] * RATE
    fakes["flux"] = rng.uniform(60, 450, n_fakes) * u.adu
    injected, truth = ss.inject_moving_source(frames, fakes, epoch=epoch, fwhm=fwhm,
                                              psf_beta=beta)
    p2 = moffat_sum_p2(fwhm, beta)
    snr = []
    for k in range(n_fakes):
        rows = truth[truth["fake"] == k]
        inv = sum(p2 / pixel_noise(frames[int(r["frame"])], r["x"], r["y"]) ** 2
                  for r in rows if r["on_frame"])
        snr.append(float(fakes["flux"][k].value) * np.sqrt(inv))
    fakes["snr_optimal"] = snr
    print(f"seed {seed}: {n_fakes} fakes injected")
    found = ss.search_motion(injected, ra_rate=(-40, 40) * RATE, dec_rate=(-40, 40) * RATE,
                             snr_threshold=5)
    hit = []
    for row in fakes:
        sep = SkyCoord(found["ra"], found["dec"]).separation(SkyCoord(row["ra"], row["dec"]))
        drate = np.hypot(found["ra_rate"].to_value(RATE) - row["ra_rate"].to_value(RATE),
                         found["dec_rate"].to_value(RATE) - row["dec_rate"].to_value(RATE))
        hit.append(bool(np.any((sep < 1.5 * u.arcsec) & (drate < 4))))
        if not hit[-1] and len(found):
            j = int(np.argmin(sep))
            x, y = frames[0].wcs.world_to_pixel(SkyCoord(row["ra"], row["dec"]))
            saturated = near_saturation(frames, truth[truth["fake"] == row.index])
            print(f"missed (optimal S/N {row['snr_optimal']:.1f}"
                  f"{', near a saturated star' if saturated else ''}): pixel ({float(x):.0f}, "
                  f"{float(y):.0f}) rates "
                  f"{row['ra_rate'].value:+.1f} {row['dec_rate'].value:+.1f}, nearest "
                  f"candidate {sep[j].to_value(u.arcsec):.1f}\" away, rate error "
                  f"{drate[j]:.1f}\"/h, S/N {found['snr'][j]:.1f}; grid masked "
                  f"{found.meta['masked_fraction']:.1%}")
    fakes["found"] = hit
    ratios = []
    for row in fakes[fakes["found"]]:
        sep = SkyCoord(found["ra"], found["dec"]).separation(SkyCoord(row["ra"], row["dec"]))
        j = int(np.argmin(sep))
        ratios.append((found["snr"][j] / row["snr_optimal"],
                       found["flux"][j].value / row["flux"].value))
    ratios = np.array(ratios)
    print(f"seed {seed}: found S/N over optimal, median {np.median(ratios[:, 0]):.3f}; found "
          f"flux over injected, median {np.median(ratios[:, 1]):.3f}")
    return fakes


def main():
    import argparse

    from matplotlib.figure import Figure
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fastest", action="store_true",
                        help="fakes at 25 to 40 arcsec/h on both axes; no figure")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    folder = ss.get_data_path("lowell42-5945/5945")
    frames = ss.read_frames(sorted(glob.glob(str(folder / "*.fits"))))
    fakes = vstack([one_run(frames, seed, fastest=args.fastest) for seed in (1, 2)])
    edges = np.arange(2, 17, 1.0)
    centres, recall, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (fakes["snr_optimal"] >= lo) & (fakes["snr_optimal"] < hi)
        if inside.sum():
            centres.append((lo + hi) / 2)
            recall.append(float(np.mean(fakes["found"][inside])))
            counts.append(int(inside.sum()))
    print(f"{'S/N':>6s} {'fakes':>6s} {'found':>6s}")
    for c, n, r in zip(centres, counts, recall):
        print(f"{c:6.1f} {n:6d} {r:6.2f}")
    for lo in (7, 8, 10):
        above = fakes["snr_optimal"] >= lo
        print(f"optimal S/N >= {lo}: {int(np.sum(fakes['found'][above]))} of "
              f"{int(above.sum())} found")
    if args.fastest:
        return
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    ax.plot(centres, recall, "o-", color="tab:blue")
    ax.axvline(5, color="gray", ls=":", label="snr_threshold = 5")
    ax.set_xlabel("optimal stack S/N of the fake")
    ax.set_ylabel("fraction found")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("search_motion on the raw Lowell frames, +-40\"/h", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
