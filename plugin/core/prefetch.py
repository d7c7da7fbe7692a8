"""Reading the next tiles while onnxruntime works on the current ones.

Reading and co-registering the inputs (GDAL warped VRTs) can take as long as inference, and both
release the GIL, so one background thread that reads ahead overlaps them. Only that thread
touches the input datasets (GDAL datasets are not safe to share between threads). The queue is
bounded, so at most ``depth`` tiles wait in memory.
"""
import queue
import threading
import time

_DONE = object()


class TilePrefetcher:
    """Iterate ``read(*window)`` over ``windows`` in order, read ahead in a thread.

    Yields ``(result, seconds)``: what ``read`` returned and how long it took. An exception in
    ``read`` is raised by the iteration at that tile. Use as a context manager: leaving it (a
    cancel, an error) stops the thread and waits for it, so the datasets can be closed after.
    ``depth=0`` reads in the caller's thread (no overlap; for comparisons).
    """

    def __init__(self, read, windows, depth=2):
        self.read = read
        self.windows = list(windows)
        self.depth = int(depth)
        self.waited_s = 0.0            # time the consumer spent waiting for a tile
        self._stop = threading.Event()
        self._queue = None
        self._thread = None

    def _work(self):
        for window in self.windows:
            if self._stop.is_set():
                return
            t = time.perf_counter()
            try:
                item = (self.read(*window), time.perf_counter() - t, None)
            except BaseException as exc:  # handed to the consumer, raised there
                item = (None, 0.0, exc)
            if not self._put(item) or item[2] is not None:
                return
        self._put(_DONE)

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        if self.depth <= 0:
            for window in self.windows:
                t = time.perf_counter()
                result = self.read(*window)
                yield result, time.perf_counter() - t
            return
        self._queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(target=self._work, name="urban-functions-reader",
                                        daemon=True)
        self._thread.start()
        while True:
            t = time.perf_counter()
            item = self._queue.get()
            self.waited_s += time.perf_counter() - t
            if item is _DONE:
                return
            result, seconds, error = item
            if error is not None:
                raise error
            yield result, seconds

    def close(self):
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a reader waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(0.05)
            self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
