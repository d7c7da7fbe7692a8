"""SIGTERM handled like Cancel while a Processing algorithm runs in the main thread.

``qgis_process`` runs algorithms in its main thread; a ``kill`` (or a batch scheduler's time
limit) would otherwise end the process at once and leave hidden partial files beside the output.
With the handler, the next cancel check of the run stops it and removes them. In QGIS desktop
algorithms run in worker threads, where Python cannot install signal handlers: nothing changes.
SIGKILL and power loss cannot be handled; the next run removes what they leave (pid in the
partial file's name).
"""
import signal
import threading
from contextlib import contextmanager


@contextmanager
def sigterm_cancels(feedback, log=None):
    if threading.current_thread() is not threading.main_thread() or \
            not hasattr(signal, "SIGTERM"):
        yield
        return

    def on_sigterm(signum, frame):
        if log:
            log("SIGTERM received: cancelling; no output will be written.")
        feedback.cancel()

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError):  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
