# Licensed under a 3-clause BSD style license - see LICENSE
"""What the command line writes to stderr: messages, and progress one stage at a time.

The library reports progress as log records of ``shiftstack_ccd.progress`` that carry
``record.progress = (stage, done, total)`` (see ``_parallel.progress``). Here they become one
tqdm bar per stage on a terminal, or at most about ten plain lines per stage otherwise (a
log file or a pipe gets no carriage returns and no line per frame).
"""

import contextlib
import logging
import sys

__all__ = []

#: Plain (not-a-terminal) progress: a line each time a stage passes another tenth.
STEPS_PER_STAGE = 10


class CLIHandler(logging.Handler):
    """The command line's one handler on the ``shiftstack_ccd`` logger.

    Parameters
    ----------
    stream : file
        Where to write (stderr).
    level : int
        Messages below it are dropped.
    progress_level : int
        Progress records below it are dropped (``logging.ERROR`` with -q drops them all).
    tty : bool or None
        Draw bars (True) or plain lines (False); None asks ``stream.isatty()``.
    """

    def __init__(self, stream, level, progress_level, tty=None):
        super().__init__()
        self.stream = stream
        self.message_level = level
        self.progress_level = progress_level
        if tty is None:
            isatty = getattr(stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self._bar = None       # tqdm bar of the current stage (terminal)
        self._printed = {}     # stage -> (last done, last tenth printed) (plain lines)
        self.setFormatter(logging.Formatter("shiftstack-ccd: %(message)s"))

    def emit(self, record):
        try:
            progress = getattr(record, "progress", None)
            if record.name == "shiftstack_ccd.progress" or progress is not None:
                if record.levelno < self.progress_level:
                    return
                if progress is not None:
                    self._progress(*progress)
                    return
            elif record.levelno < self.message_level:
                return
            self.write_line(self.format(record))
        except Exception:  # a handler never raises into the code that logs
            self.handleError(record)

    def write_line(self, line):
        """Write one line to the stream, above the bar if one is drawn."""
        if self._bar is not None:  # above the bar, which is redrawn below
            self._bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _progress(self, stage, done, total):
        if self.tty:
            self._draw(stage, done, total)
            return
        last_done, last_tenth = self._printed.get(stage, (0, 0))
        if done <= last_done:  # the same stage again (another stack): start over
            last_tenth = 0
        tenth = done * STEPS_PER_STAGE // max(total, 1)
        if tenth > last_tenth:
            self.stream.write(f"shiftstack-ccd: {stage}: {done}/{total}\n")
            self.stream.flush()
        self._printed[stage] = (done, max(tenth, last_tenth))

    def _draw(self, stage, done, total):
        from tqdm import tqdm  # only on a terminal: the import is not free
        if self._bar is not None and (self._bar.desc != stage or done < self._bar.n):
            self.close_bar()
        if self._bar is None:
            self._bar = tqdm(total=total, desc=stage, file=self.stream, unit="frame",
                             leave=True, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close_bar()

    def close_bar(self):
        """End the current bar (at the end of a stage, or when the command stops)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self):
        self.close_bar()
        super().close()


@contextlib.contextmanager
def installed(level, progress_level, stream=None, tty=None):
    """A `CLIHandler` as the only handler of the ``shiftstack_ccd`` logger, for a while.

    The logger stops propagating to the root logger meanwhile: a library that calls
    ``logging.debug()`` at module level (ccdproc's ImageFileCollection does) installs a root
    handler that would print every record a second time, as ``INFO:shiftstack_ccd...``.
    The logger's level, propagation and handlers are restored afterwards (``main`` may be
    called many times in one process).
    """
    package = logging.getLogger("shiftstack_ccd")
    saved = package.level, package.propagate
    handler = CLIHandler(sys.stderr if stream is None else stream, level, progress_level,
                         tty=tty)
    package.addHandler(handler)
    package.setLevel(min(level, progress_level))
    package.propagate = False
    try:
        yield handler
    finally:
        package.removeHandler(handler)
        handler.close()
        package.setLevel(saved[0])
        package.propagate = saved[1]


def run_summary(result, n_given, seconds, outputs):
    """The last line of ``stack`` and ``run``: frames used / refused, wall time, outputs.

    Parameters
    ----------
    result : `~shiftstack_ccd.stack.StackResult`
    n_given : int
        Frames the user gave (after a glob or a folder was expanded).
    seconds : float
        Wall time of the command.
    outputs : list of path
        The files written.
    """
    table = result.table
    weights = table["weight"] if "weight" in table.colnames else [1] * len(table)
    used = int(sum(1 for w in weights if w > 0))
    refused = n_given - used
    parts = [f"{used} of {n_given} frames stacked"]
    if refused:
        parts.append(f"{refused} refused (zero weight or not combined)")
    if "refine_ok" in table.colnames:
        bad = int(sum(1 for ok in table["refine_ok"] if not ok))
        if bad:
            parts.append(f"{bad} offset refinement(s) refused (see the FRAMES table)")
    parts.append(f"{seconds:.1f} s")
    parts.append("outputs: " + ", ".join(str(p) for p in outputs))
    return "done: " + "; ".join(parts)
