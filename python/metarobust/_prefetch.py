"""The prefetch thread behind ``EpisodeSampler.batches``: a producer that fills batches
into a bounded queue ahead of the consumer, and an exit hook that stops every live one
while the interpreter is whole."""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["Producer", "stop_all"]


class Producer(threading.Thread):
    """The prefetch thread of a :class:`BatchIterator`: fills batches into ``queue`` until
    ``total`` are made or ``stop`` is set.

    It holds what filling needs (the sampler, the queue, the stop event), never the
    iterator itself, so an abandoned iterator is collected and its finalizer stops the
    thread. A daemon thread does not hold up interpreter exit, but one still working when
    the interpreter finalizes is ended (``pthread_exit``) at its next GIL acquisition, and
    inside a torch operation (a transform) that unwinds a C++ destructor and aborts the
    process; so :func:`stop_all` stops and joins the live producers at exit, while the
    interpreter is whole.
    """

    live: weakref.WeakSet[Producer] = weakref.WeakSet()

    def __init__(self, sampler: Any, queue_: queue.Queue, stop: threading.Event,
                 first: int, total: int | None, batch_size: int, stride: int,
                 pin_memory: bool, transform: Callable[[Any, int], Any] | None
                 ) -> None:
        super().__init__(daemon=True, name="metarobust-prefetch")
        self.sampler, self.queue, self.stop = sampler, queue_, stop
        self.first, self.total, self.batch_size, self.stride = first, total, batch_size, stride
        self.pin_memory, self.transform = pin_memory, transform
        Producer.live.add(self)

    def _put(self, item: Any) -> bool:
        """Queues ``item`` unless stopped first (checked every 0.1 s while the queue is
        full); True if it was queued."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        made = 0
        while not self.stop.is_set() and (self.total is None or made < self.total):
            first = self.first + made * self.stride
            try:
                item: Any = self.sampler.sample_batch(first, self.batch_size, self.pin_memory)
                if self.transform is not None:
                    item = self.transform(item, first)
            except BaseException as e:  # handed to the consumer, raised there
                item = e
            if not self._put(item) or isinstance(item, BaseException):
                return
            del item  # the consumer owns the batch now
            made += 1
        self._put(None)  # the end of a finite run


@atexit.register
def stop_all(timeout: float = 5.0) -> None:
    """Stops every live prefetch thread and waits (up to ``timeout`` seconds in all) for
    them to finish, before the interpreter starts finalizing."""
    producers = list(Producer.live)
    for p in producers:
        p.stop.set()
    deadline = time.monotonic() + timeout
    for p in producers:
        if p is not threading.current_thread():
            p.join(max(0.0, deadline - time.monotonic()))
