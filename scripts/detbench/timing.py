"""The timed loop every benchmark shares: images decoded ahead by a background thread, only
`session.run` timed, and the recipe's step log; then percentiles over the steps after warm-up."""

import logging
import queue
import threading
import time

import numpy as np

from detbench.common import StageError
from detbench.detection_graph import decode_image

log = logging.getLogger("benchmark_graph")

LOG_EVERY = 10
PERCENTILES = (50, 90, 99)


def load_image(path, image_size):
    from PIL import Image

    array = decode_image(path.read_bytes(), path.name)
    if image_size is not None:
        height, width = image_size
        array = np.asarray(Image.fromarray(array).resize((width, height), Image.BILINEAR))
    return array


def load_batch(paths, image_size):
    return np.stack([load_image(path, image_size) for path in paths])


class ImageCycle:
    """Decoded images in file order, round and round, as the recipe's benchmark reads them.

    An unreadable image stops the run (`on_bad_image` "stop"), or is left out with a
    warning and listed in `skipped` ("skip").
    """

    def __init__(self, paths, image_size, on_bad_image="stop"):
        self.paths = list(paths)
        self.image_size = image_size
        self.on_bad_image = on_bad_image
        self.skipped = []

    def __iter__(self):
        while self.paths:
            for path in list(self.paths):
                try:
                    yield load_image(path, self.image_size)
                except StageError as error:
                    if self.on_bad_image == "stop":
                        raise StageError(f"{error} (benchmark.on_bad_image: skip leaves it out)") from None
                    log.warning("skipping %s", error)
                    self.skipped.append(path.name)
                    self.paths.remove(path)
        raise StageError("no readable image left to benchmark")

    def batches(self, batch_size):
        images = iter(self)
        while True:
            yield np.stack([next(images) for _ in range(batch_size)])


class BatchPrefetcher:
    """Decodes batches on a background thread, ahead of the timed loop.

    The queue holds as many batches as fit in `memory_budget` bytes (all of them, for
    the recipe's 500 single images); `wait_until_full` lets decoding finish before
    timing starts, so that it does not compete with the model for the cores. Runs too
    large for memory keep decoding during the run, `depth` batches ahead.
    """

    def __init__(self, images, batch_size, image_size, steps, memory_budget=2 << 30, on_bad_image="stop"):
        self.steps = steps
        self.error = None
        self.finished = threading.Event()
        self.images = ImageCycle(images, image_size, on_bad_image)
        batches = self.images.batches(batch_size)
        first = next(batches)
        self.depth = int(max(2, min(steps, memory_budget // max(first.nbytes, 1))))
        self.queue = queue.Queue(maxsize=self.depth)
        self.queue.put(first)
        self.thread = threading.Thread(target=self.produce, args=(batches,), daemon=True)
        self.thread.start()

    def produce(self, batches):
        try:
            for _ in range(1, self.steps):
                self.queue.put(next(batches))
        except Exception as error:  # handed to the consumer, which reports it
            self.error = error
            self.queue.put(None)
        finally:
            self.finished.set()

    def wait_until_full(self):
        while not self.finished.is_set() and self.queue.qsize() < self.depth:
            time.sleep(0.01)
        return self.queue.qsize()

    def __iter__(self):
        while True:
            batch = self.queue.get()
            if batch is None:
                if isinstance(self.error, StageError):
                    raise self.error
                raise StageError(f"reading images failed: {self.error}")
            yield batch


def time_steps(engine, batches, steps, ends=None):
    """Seconds per step, timing the engine's run alone (`session.run` for TensorFlow); logs as
    the recipe's benchmark does. `ends` (a list) receives each step's end on the machine-wide
    monotonic clock."""
    seconds = []
    for step, batch in zip(range(steps), batches):
        prepared = engine.timed_input(batch)
        start = time.perf_counter()
        engine.run(prepared)
        seconds.append(time.perf_counter() - start)
        if ends is not None:
            ends.append(time.monotonic())
        if step % LOG_EVERY == 0:
            log.info("Step %d: %s seconds", step, seconds[-1])
    return seconds


def summarize(seconds, warmup_steps, batch_size):
    """Latency and throughput over the steps after warm-up."""
    measured = np.array(seconds[warmup_steps:])
    if measured.size == 0:
        raise StageError(f"warmup_steps ({warmup_steps}) leaves no step to measure")
    latency_ms = measured * 1000.0
    summary = {
        "latency_ms": {
            "mean": float(latency_ms.mean()),
            **{f"p{q}": float(np.percentile(latency_ms, q)) for q in PERCENTILES},
            "min": float(latency_ms.min()),
            "max": float(latency_ms.max()),
        },
        "throughput_images_per_second": float(batch_size * measured.size / measured.sum()),
        "measured_steps": int(measured.size),
        # Intel's figure: the mean over every step, the first (graph set-up) included.
        "intel_avg_duration_per_step_seconds": float(np.mean(seconds)),
    }
    return summary
