# Licensed under a 3-clause BSD style license - see LICENSE
"""Completeness of a detection: the fraction of injected fakes recovered, by magnitude.

Inject fakes of known magnitude (`~shiftstack_ccd.datasets.inject_moving_source`), stack
and measure them (`~shiftstack_ccd.measure.measure_target` with ``position=`` the fakes),
then `completeness` bins the outcome and `plot_completeness` draws it.
"""

import numpy as np
from astropy import units as u
from astropy.table import QTable

__all__ = ["completeness", "plot_completeness"]


def _wilson(k, n, z=1.0):
    """Wilson score interval of a binomial fraction (1 sigma by default)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # rounding aside, the interval holds the fraction itself
    return np.clip(np.fmin(centre - half, p), 0, 1), np.clip(np.fmax(centre + half, p), 0, 1)


def completeness(mag, detected, bins=8):
    """Recovered fraction of injected sources in magnitude bins.

    Parameters
    ----------
    mag : array-like or `~astropy.units.Quantity`
        Injected magnitudes (or any brightness measure, e.g. the expected S/N).
    detected : array-like of bool
        Whether each was recovered.
    bins : int or array-like
        Number of equal bins over the range of ``mag``, or the bin edges.

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per bin: ``mag_lo``, ``mag_hi``, ``mag`` (centre), ``n``, ``n_detected``,
        ``fraction``, ``fraction_lo``, ``fraction_hi`` (Wilson 1-sigma interval).
        ``meta['mag_50']`` is where the fraction crosses one half (linear interpolation
        between bin centres; NaN if it never does).

    Examples
    --------
    >>> import numpy as np
    >>> mag = np.linspace(18, 22, 200)
    >>> detected = mag < 20.5
    >>> table = completeness(mag, detected, bins=[18, 19, 20, 21, 22])
    >>> table["fraction"].tolist()
    [1.0, 1.0, 0.5, 0.0]
    >>> float(table.meta["mag_50"])
    20.5
    """
    unit = getattr(mag, "unit", None)
    values = np.asarray(u.Quantity(mag).value if unit is not None else mag, dtype=float)
    detected = np.asarray(detected, dtype=bool)
    if values.shape != detected.shape or values.size == 0:
        raise ValueError(f"mag and detected must be arrays of the same, non-zero length; got "
                         f"{values.shape} and {detected.shape}")
    good = np.isfinite(values)
    edges = np.histogram_bin_edges(values[good], bins=bins)
    index = np.clip(np.digitize(values[good], edges) - 1, 0, len(edges) - 2)
    n = np.bincount(index, minlength=len(edges) - 1)
    k = np.bincount(index, weights=detected[good], minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = k / n
    lo, hi = _wilson(k, n)
    table = QTable()
    scale = unit if unit is not None else 1
    table["mag_lo"] = edges[:-1] * scale
    table["mag_hi"] = edges[1:] * scale
    table["mag"] = 0.5 * (edges[:-1] + edges[1:]) * scale
    table["n"] = n
    table["n_detected"] = k.astype(int)
    table["fraction"] = fraction
    table["fraction_lo"] = lo
    table["fraction_hi"] = hi
    table.meta["mag_50"] = _crossing(0.5 * (edges[:-1] + edges[1:]), fraction)
    return table


def _crossing(x, fraction):
    ok = np.isfinite(fraction)
    x, f = x[ok], fraction[ok]
    for i in range(len(f) - 1):
        if (f[i] - 0.5) * (f[i + 1] - 0.5) <= 0 and f[i] != f[i + 1]:
            return float(x[i] + (0.5 - f[i]) * (x[i + 1] - x[i]) / (f[i + 1] - f[i]))
    return np.nan


def plot_completeness(table, ax=None, label=None, xlabel="magnitude"):
    """Draw a `completeness` table: recovered fraction against magnitude, with errors.

    Parameters
    ----------
    table : `~astropy.table.QTable`
        From `completeness`.
    ax : `matplotlib.axes.Axes`, optional
        Where to draw (default: a new figure).
    label : str, optional
        Legend label.
    xlabel : str
        Label of the x axis.

    Returns
    -------
    ax : `matplotlib.axes.Axes`
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    x = u.Quantity(table["mag"]).value
    fraction = np.asarray(table["fraction"], dtype=float)
    errors = [fraction - np.asarray(table["fraction_lo"]),
              np.asarray(table["fraction_hi"]) - fraction]
    ax.errorbar(x, fraction, yerr=errors, marker="o", capsize=3, label=label)
    mag_50 = table.meta.get("mag_50", np.nan)
    if np.isfinite(mag_50):
        ax.axvline(mag_50, color="0.6", ls="--", lw=1)
    ax.axhline(0.5, color="0.8", lw=0.8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction recovered")
    if label:
        ax.legend()
    return ax
