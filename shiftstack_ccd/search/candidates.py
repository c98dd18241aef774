# Licensed under a 3-clause BSD style license - see LICENSE
"""From a candidate of `search_motion` to its stacks: ephemeris, `StackResult`, stamps."""

import logging

from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.time import Time

from ..exceptions import SearchError

__all__ = ["candidate_ephemeris", "stack_candidate", "write_candidate_stamps"]

log = logging.getLogger(__name__)


def candidate_ephemeris(candidate, reference_time=None):
    """The linear motion of a candidate, as an `~shiftstack_ccd.ephemeris.Ephemeris`.

    Parameters
    ----------
    candidate : `~astropy.table.Row`
        A row of the table `search_motion` returns (``ra``, ``dec``, ``ra_rate``,
        ``dec_rate``).
    reference_time : `~astropy.time.Time`, optional
        The epoch of ``ra``/``dec``. Default: the table's ``meta['reference_time']``.

    Returns
    -------
    ephemeris : `~shiftstack_ccd.ephemeris.Ephemeris`
        ``Ephemeris.linear`` at the candidate's position and rates.
    """
    from ..ephemeris import Ephemeris
    if reference_time is None:
        reference_time = (getattr(candidate, "meta", None) or {}).get("reference_time")
    if reference_time is None:
        raise SearchError("the candidate's table has no meta['reference_time']; give "
                          "reference_time")
    for name in ("ra", "dec", "ra_rate", "dec_rate"):
        if name not in candidate.colnames:
            raise SearchError(f"a candidate needs the column '{name}' (a row of the table "
                              "search_motion returns)")
    rate = u.arcsec / u.hour
    ephemeris = Ephemeris.linear(
        SkyCoord(u.Quantity(candidate["ra"], u.deg), u.Quantity(candidate["dec"], u.deg)),
        Time(reference_time), u.Quantity(candidate["ra_rate"], rate),
        u.Quantity(candidate["dec_rate"], rate), meta={"target": "search candidate"})
    return ephemeris


def stack_candidate(frames, candidate, method="mean", size=41, reference_time=None,
                    **kwargs):
    """Stack the frames on a candidate's motion: a `StackResult` for `measure_target`.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData`, or anything `read_frames` accepts
        The frames that were searched.
    candidate : `~astropy.table.Row`
        A row of the table `search_motion` returns.
    method : {'mean', 'median', 'sum'}
        How to combine; the median stack is the check that no single frame makes the source.
    size : int
        Output size in pixels (the candidate on the centre pixel).
    reference_time : `~astropy.time.Time`, optional
        Default: the search's reference time, so that the stack's WCS is at the epoch of the
        candidate's position.
    **kwargs
        More arguments for `shift_and_stack` (e.g. ``subtract_static=True``).

    Returns
    -------
    result : `~shiftstack_ccd.stack.StackResult`

    Examples
    --------
    >>> from astropy import units as u
    >>> import shiftstack_ccd as ss
    >>> sim = ss.simulate_observation(n_frames=8, shape=(96, 96), target_snr=4,
    ...                               target_rate=(20, -10) * u.arcsec / u.hour,
    ...                               cadence=300 * u.s, exptime=240 * u.s, n_stars=5,
    ...                               seed=3)
    >>> found = ss.search_motion(sim.frames, ra_rate=(0, 40) * u.arcsec / u.hour,
    ...                          dec_rate=(-30, 10) * u.arcsec / u.hour, snr_threshold=7)
    >>> result = ss.stack_candidate(sim.frames, found[0], size=31)
    >>> result.stack.shape, result.target_pixel
    ((31, 31), (15.0, 15.0))
    """
    from ..stack import shift_and_stack
    if reference_time is None:
        reference_time = (getattr(candidate, "meta", None) or {}).get("reference_time")
    ephemeris = candidate_ephemeris(candidate, reference_time)
    kwargs.setdefault("sky_stack", True)
    return shift_and_stack(frames, ephemeris, method=method, size=size,
                           reference_time=reference_time, **kwargs)


def write_candidate_stamps(frames, candidates, path, size=31, max_candidates=12,
                           overwrite=False, dpi=100):
    """A PNG of postage stamps: per candidate, its mean and median stacks and the sky stack.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData`, or anything `read_frames` accepts
        The frames that were searched (read once here).
    candidates : `~astropy.table.QTable`
        From `search_motion`; the first ``max_candidates`` rows are drawn, one per row of
        the figure.
    path : str or path
        Output PNG, written atomically.
    size : int
        Stamp size in pixels.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    n : int
        Number of candidates drawn.
    """
    from matplotlib.figure import Figure

    from .._utils import atomic_output
    from ..frames import read_frames
    from ..visualization import plot_image
    if not (isinstance(frames, (list, tuple)) and frames and all(hasattr(f, "wcs")
                                                                 for f in frames)):
        frames = read_frames(frames)
    rows = list(candidates[:max_candidates])
    n = max(len(rows), 1)
    fig = Figure(figsize=(7.5, 2.6 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    if not rows:
        for ax in axes[0]:
            ax.set_axis_off()
        axes[0, 1].text(0.5, 0.5, "no candidate", ha="center", va="center")
    for k, row in enumerate(rows):
        mean = stack_candidate(frames, row, method="mean", size=size)
        median = stack_candidate(frames, row, method="median", size=size, sky_stack=False)
        label = (f"#{k + 1} S/N {float(row['snr']):.1f}, "
                 f"{float(u.Quantity(row['ra_rate']).to_value(u.arcsec / u.hour)):+.1f} "
                 f"{float(u.Quantity(row['dec_rate']).to_value(u.arcsec / u.hour)):+.1f}\"/h")
        centre = mean.target_pixel
        plot_image(axes[k, 0], mean.stack, title=f"{label}\nmean", mark=centre)
        plot_image(axes[k, 1], median.stack, title="median", mark=centre)
        if mean.sky_stack is not None:
            plot_image(axes[k, 2], mean.sky_stack, title="on the stars", mark=centre)
        else:
            axes[k, 2].set_axis_off()
    fig.tight_layout()
    with atomic_output(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    log.info("wrote %s (%d candidates)", path, len(rows))
    return len(rows)
