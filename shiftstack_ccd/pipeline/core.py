# Licensed under a 3-clause BSD style license - see LICENSE
"""A validated pipeline file and how it runs: `Pipeline` (made by `load_pipeline`) and
`PipelineResult`.

`Pipeline.run` reads each frame, calibrates it with `shiftstack_ccd.calibration`, applies
the per-frame steps, stacks with `shift_and_stack` and writes the outputs; the stack's
header records the calibration and the steps.
"""

import logging
from pathlib import Path

from astropy.time import Time

from .._auto_size import RULE as AUTO_SIZE_RULE
from .._utils import frame_label, set_card
from ..calibration import (calibrate_frame, combine_bias, combine_dark, combine_flat,
                           read_calibration_frame, subtract_overscan_and_trim)
from ..exceptions import ShiftStackError
from ..steps import run_steps
from ._checker import header_key, is_header_ref

__all__ = ["Pipeline", "PipelineResult"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------
class Pipeline:
    """A validated pipeline file, ready to `run`. Made by `load_pipeline`.

    Attributes
    ----------
    path : `~pathlib.Path`
        The pipeline file.
    files : list of `~pathlib.Path`
        The input frames.
    calibration : dict
        The resolved ``[calibration]`` settings (``overscan``, ``trim``: a FITS section or
        ``"header:KEY"``; ``bias``, ``dark``, ``flat``: lists of paths; ``gain``,
        ``read_noise``: numbers or ``"header:KEY"``; ...).
    steps : list of (str, callable, dict)
        The per-frame steps: name, function, keyword arguments.
    motion : dict
        ``{"ephemeris": Ephemeris}`` or ``{"horizons": {...}}``.
    stack_options : dict
        Keyword arguments for `shift_and_stack`.
    outputs : dict
        ``stack`` and ``preview`` paths (or None) and ``overwrite``.
    """

    def __init__(self, path, files, hdu, unit, calibration, steps, motion, stack_options,
                 outputs):
        self.path = Path(path)
        self.files = files
        self.hdu = hdu
        self.unit = unit
        self.calibration = calibration
        self.steps = steps
        self.motion = motion
        self.stack_options = stack_options
        self.outputs = outputs
        self._size = None  # (size, why), found by output_size
        self._eph = None  # the motion model, Horizons asked once

    def describe(self):
        """Lines summarising what `run` will do."""
        cal = self.calibration
        lines = [f"{len(self.files)} input frames, from {self.files[0]}"
                 + (f" to {self.files[-1]}" if len(self.files) > 1 else "")]
        done = [f"overscan {cal['overscan']}" if cal.get("overscan") else None,
                f"trim {cal['trim']}" if cal.get("trim") else None,
                "uncertainty from gain and read noise" if cal.get("gain") is not None
                else None,
                f"bias ({len(cal['bias'])} file(s))" if cal.get("bias") else None,
                f"dark ({len(cal['dark'])} file(s), scaled by EXPTIME)" if cal.get("dark")
                else None,
                f"flat ({len(cal['flat'])} file(s))" if cal.get("flat") else None]
        done = [d for d in done if d]
        lines.append("calibration: " + (", ".join(done) if done else "none"))
        for name, _, params in self.steps:
            args = ", ".join(f"{k}={v!r}" for k, v in params.items())
            lines.append(f"step: {name}({args})")
        if "ephemeris" in self.motion:
            eph = self.motion["ephemeris"]  # where it came from, else its repr
            lines.append(f"motion: {eph.meta.get('source') or repr(eph)}")
        else:
            lines.append(f"motion: JPL Horizons {self.motion['horizons']}")
        opts = ", ".join(f"{k}={v!r}" for k, v in self.stack_options.items())
        lines.append(f"stack: shift_and_stack({opts})")
        if "size" not in self.stack_options:
            lines.append(f"output size (no [stack] size): {AUTO_SIZE_RULE}")
        for key in ("stack", "preview"):
            if self.outputs.get(key):
                lines.append(f"output {key}: {self.outputs[key]}")
        return lines

    # ---------------------------------------------------------------------- running
    def output_size(self):
        """The ``size`` `run` gives `~shiftstack_ccd.shift_and_stack`, and why.

        ``[stack] size = N`` (pixels, or an angle such as ``"3 arcmin"``) is used as it is;
        ``size = "full"`` is every pixel of every frame (``size=None``); without a size, the
        same default as ``shiftstack-ccd stack`` without ``--size``: the target's path
        across the frames plus a margin of stellar FWHM on each side (the FWHM measured on
        the middle frame; `describe` states the rule), the whole field when that is larger.
        The default reads the middle frame and the frames' headers once; the answer is kept.

        Returns
        -------
        size : int, tuple, `~astropy.units.Quantity` or None
            As `~shiftstack_ccd.shift_and_stack` takes it (None: the whole field).
        why : str
            How it was chosen, in words.
        """
        if self._size is None:
            size = self.stack_options.get("size")
            if size == "full":
                self._size = (None, '[stack] size = "full"')
            elif "size" in self.stack_options:
                self._size = (size, "[stack] size")
            else:
                from .._auto_size import default_size
                size, why = default_size([str(p) for p in self.files], self._ephemeris(),
                                         hdu=self.hdu, unit=self.unit, option="[stack] size")
                self._size = (size, f"no [stack] size: {why}")
        return self._size

    def run(self):
        """Run the pipeline; return a `PipelineResult`.

        The input files go to `shift_and_stack` as paths, with the calibration and the
        ``[[steps]]`` as its per-frame steps: it reads, calibrates and processes one frame
        at a time, so memory does not grow with the number of frames. The input files are
        only read. Outputs are written atomically, at the end; an existing output is
        replaced only when ``overwrite`` is set.
        """
        from ..frames import read_frame
        from ..stack import shift_and_stack
        from ..visualization import TARGET_ZOOM, write_preview

        masters = self._masters()
        first = read_frame(self.files[0], hdu=self.hdu, unit=self.unit)
        used = self._resolved(first)
        added = []
        if self._calibrates():
            # The cards ccdproc writes, kept for the stack's header: from the first frame,
            # calibrated once more here (shift_and_stack keeps no frame's header).
            before = set(first.meta.keys())
            added = [card for card in self._calibrate(first, masters).meta.cards
                     if card.keyword not in before
                     and card.keyword not in ("HISTORY", "COMMENT", "")]
        del first
        size, why = self.output_size()
        log.info("output size: %s (%s)", "the whole field" if size is None else size, why)
        options = {**self.stack_options, "size": size}
        result = shift_and_stack([str(p) for p in self.files], self._ephemeris(),
                                 per_frame_steps=self._per_frame_steps(masters),
                                 hdu=self.hdu, unit=self.unit, **options)
        self._record(result, added, used)

        written = {}
        overwrite = self.outputs["overwrite"]
        if self.outputs.get("stack"):
            result.write(self.outputs["stack"], overwrite=overwrite)
            written["stack"] = self.outputs["stack"]
        if self.outputs.get("preview"):
            images = [result.stack] + ([result.sky_stack] if result.sky_stack is not None
                                       else [])
            titles = ["stacked on the target", "stacked on the stars"][:len(images)]
            write_preview(self.outputs["preview"], images, titles=titles,
                          marks=[result.target_pixel] + [None] * (len(images) - 1),
                          overwrite=overwrite, zoom=TARGET_ZOOM)
            written["preview"] = self.outputs["preview"]
        return PipelineResult(self, result, written)

    def frames(self):
        """The input frames as `run` stacks them (read, calibrated, after the ``[[steps]]``),
        one at a time: a generator, to look at what the stack is made of.
        """
        from ..frames import read_frame

        steps = self._per_frame_steps(self._masters())
        for path in self.files:
            yield run_steps(read_frame(path, hdu=self.hdu, unit=self.unit), steps)

    def _calibrates(self):
        cal = self.calibration
        return any(cal.get(key) for key in ("overscan", "trim", "bias", "dark", "flat")) \
            or cal.get("gain") is not None

    def _per_frame_steps(self, masters):
        """``(name, function, params)``: the calibration (if any), then the ``[[steps]]``."""
        steps = list(self.steps)
        if self._calibrates():
            steps.insert(0, ("calibration", _calibration_step,
                             {"pipeline": self, "masters": masters}))
        return steps

    def _resolved(self, ccd):
        """The calibration values a frame gets: sections and numbers from its header."""
        cal = self.calibration
        used = {"overscan": self._section(ccd, cal.get("overscan"), "overscan"),
                "trim": self._section(ccd, cal.get("trim"), "trim section")}
        if cal.get("gain") is not None:
            used["gain"] = self._number(ccd, cal["gain"], "gain")
            used["read_noise"] = self._number(ccd, cal["read_noise"], "read noise")
        return used

    def _section(self, ccd, spec, what):
        if spec is None:
            return None
        if is_header_ref(spec):
            key = header_key(spec)
            if key not in ccd.meta:
                raise ShiftStackError(f"{frame_label(ccd)}: no {key} card for the {what}.")
            return str(ccd.meta[key]).strip()
        return spec

    def _number(self, ccd, spec, what):
        if is_header_ref(spec):
            key = header_key(spec)
            try:
                return float(ccd.meta[key])
            except (KeyError, TypeError, ValueError):
                raise ShiftStackError(f"{frame_label(ccd)}: {key} does not hold the {what} "
                                      f"as a number ({ccd.meta.get(key)!r}).") from None
        return float(spec)

    def _sections(self, ccd):
        """Overscan and trim arguments of `subtract_overscan_and_trim`, for this frame."""
        cal = self.calibration
        return {"overscan": self._section(ccd, cal.get("overscan"), "overscan"),
                "trim": self._section(ccd, cal.get("trim"), "trim section"),
                "overscan_median": cal.get("overscan_median", True),
                "overscan_polynomial": cal.get("overscan_polynomial")}

    def _calibration_frame(self, path):
        ccd = read_calibration_frame(path, hdu=self.hdu, unit=self.unit)
        return subtract_overscan_and_trim(ccd, **self._sections(ccd))

    def _masters(self):
        cal = self.calibration
        masters = {}
        if cal.get("bias"):
            masters["bias"] = combine_bias([self._calibration_frame(p) for p in cal["bias"]])
        if cal.get("dark"):
            masters["dark"] = combine_dark([self._calibration_frame(p) for p in cal["dark"]],
                                           bias=masters.get("bias"))
        if cal.get("flat"):  # its short exposure's dark current neglected, as read_masters
            masters["flat"] = combine_flat([self._calibration_frame(p) for p in cal["flat"]],
                                           bias=masters.get("bias"))
        return masters

    def _calibrate(self, ccd, masters):
        """`calibrate_frame` with this frame's sections, gain and read noise."""
        cal = self.calibration
        gain = read_noise = None
        if cal.get("gain") is not None:
            gain = self._number(ccd, cal["gain"], "gain")
            read_noise = self._number(ccd, cal["read_noise"], "read noise")
        return calibrate_frame(ccd, **self._sections(ccd), gain=gain, read_noise=read_noise,
                               bias=masters.get("bias"), dark=masters.get("dark"),
                               flat=masters.get("flat"), flat_min=cal.get("flat_min"))

    def _ephemeris(self):
        if "ephemeris" in self.motion:
            return self.motion["ephemeris"]
        if self._eph is None:
            self._eph = self._horizons()
        return self._eph

    def _horizons(self):
        from ..ephemeris import ephemeris_for_times
        from ..frames import mid_exposure_time, read_frame
        spec = self.motion["horizons"]
        times = Time([mid_exposure_time(read_frame(p, hdu=self.hdu, unit=self.unit))
                      for p in self.files])  # one frame in memory at a time
        return ephemeris_for_times(times, spec["target"], spec.get("location", "500"),
                                   id_type=spec.get("id_type"), cache=spec.get("cache", True))

    def _record(self, result, ccdproc_cards, used):
        """Calibration and steps into the stack's header (the sky stack's too)."""
        cal = self.calibration
        for image in (result.stack, result.sky_stack):
            if image is None:
                continue
            header = image.meta
            for card in ccdproc_cards:  # ccdproc's own keywords, from the first frame
                key = card.keyword if len(card.keyword) <= 8 else f"HIERARCH {card.keyword}"
                if card.keyword not in header:
                    header[key] = (card.value, card.comment)
            set_card(header, "SSPIPE", self.path.name, "pipeline file")
            for key, name, comment in (("SSOSCAN", "overscan", "overscan section"),
                                       ("SSTRIM", "trim", "trim section")):
                if used.get(name):
                    source = cal[name]
                    from_header = (f" ({header_key(source)}, first frame)"
                                   if is_header_ref(source) else "")
                    set_card(header, key, used[name], comment + from_header)
            for key, name in (("SSBIAS", "bias"), ("SSDARK", "dark"), ("SSFLAT", "flat")):
                if cal.get(name):
                    set_card(header, key, ", ".join(p.name for p in cal[name]),
                             f"{name} frame(s)")
            if "gain" in used:
                set_card(header, "SSGAIN", used["gain"], "[e-/unit] gain, for the error")
                set_card(header, "SSRDNOIS", used["read_noise"], "[e-] read noise, for the "
                         "error")
            for name, _, params in self.steps:
                header.add_history(f"per-frame step {name}({_format_args(params)})")


class PipelineResult:
    """What `run_pipeline` returns.

    Attributes
    ----------
    pipeline : `Pipeline`
        The pipeline that ran (``pipeline.frames()`` gives the frames as they were stacked,
        one at a time).
    result : `~shiftstack_ccd.stack.StackResult`
        The stack.
    outputs : dict
        ``{"stack": path, "preview": path}`` of the files written.
    """

    def __init__(self, pipeline, result, outputs):
        self.pipeline = pipeline
        self.result = result
        self.outputs = outputs


def _calibration_step(ccd, pipeline, masters):
    """The pipeline's calibration as a per-frame step (a module-level function, so that the
    step pickles for shift_and_stack's process scheduler)."""
    return pipeline._calibrate(ccd, masters)


def _format_args(params):
    return ", ".join(f"{k}={v!r}" for k, v in params.items())
