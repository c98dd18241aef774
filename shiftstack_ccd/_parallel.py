# Licensed under a 3-clause BSD style license - see LICENSE
"""Running per-frame work serially or through dask, with progress in the log."""

import logging

__all__ = []

log = logging.getLogger("shiftstack_ccd.progress")


def _progress(done, total, label):
    log.info("%s: %d/%d", label, done, total)


def _worker_ignores_interrupts():
    """In a worker process: leave Ctrl-C to the main process.

    A terminal sends SIGINT to every process of the group; workers that took it would each
    print a traceback. The main process stops the work and cleans up (see ``cli.main``).
    """
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def map_frames(function, items, scheduler=None, label="frames"):
    """``[function(item) for item in items]``, serially or through dask, in order.

    Parameters
    ----------
    function : callable
        A module-level function (it is pickled for process and distributed schedulers).
    items : list
        One argument per call.
    scheduler : None, str or `distributed.Client`
        None or ``'sync'``: a plain loop. ``'threads'`` or ``'processes'``: dask's local
        schedulers. A ``'tcp://host:port'`` address or a ``distributed.Client``: a
        dask.distributed cluster (a client opened here is closed here).
    label : str
        What the progress lines in the log call the items.

    Returns
    -------
    results : list
        In the order of ``items``.
    """
    items = list(items)
    total = len(items)
    if scheduler in (None, "sync", "serial"):
        results = []
        for done, item in enumerate(items, start=1):
            results.append(function(item))
            _progress(done, total, label)
        return results
    if scheduler in ("threads", "processes"):
        import dask
        from dask.callbacks import Callback

        tasks = [dask.delayed(function, pure=False)(item) for item in items]
        keys = {task.key for task in tasks}

        class Progress(Callback):
            done = 0

            def _posttask(self, key, result, dsk, state, worker_id):
                if key in keys:
                    self.done += 1
                    _progress(self.done, total, label)

        options = {"initializer": _worker_ignores_interrupts} if scheduler == "processes" \
            else {}
        with Progress():
            return list(dask.compute(*tasks, scheduler=scheduler, **options))
    return _map_distributed(function, items, scheduler, label)


def _map_distributed(function, items, scheduler, label):
    from distributed import Client, as_completed
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        futures = client.map(function, items, pure=False)
        for done, _ in enumerate(as_completed(futures), start=1):
            _progress(done, len(items), label)
        return client.gather(futures)
    finally:
        if own:
            client.close()
