"""Dynamic batching: requests from many clients share graph calls (asyncio + one worker thread).

Each request's records join a queue; a loop takes the oldest request and every request
waiting behind it with the same options, until ``max_batch`` records or ``max_wait_ms`` after
the oldest arrived, runs them through the runtime in one call, and hands each request its
slice of the results. Inference runs in one thread, so the event loop keeps accepting and
validating requests meanwhile (onnxruntime releases the GIL).

A request with a :class:`~modkit.runtime.generation.Watcher` (a streamed completion, one that
wants log-probabilities) runs alone, watched token by token. A batch whose requests have all
given up (timed out, client gone) stops decoding at its next token, so its slot is free again.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modkit.runtime.generation import StopDecoding, Watcher, watcher
from modkit.serve.metrics import Metrics


class Overloaded(Exception):
    """More records are waiting than the queue holds."""


@dataclass
class _Request:
    records: list[dict[str, Any]]
    options: Any  # the task's validated options model (frozen, so hashable)
    done: asyncio.Future
    watcher: Watcher | None = None
    arrived: float = field(default_factory=time.monotonic)


class _Abandoned(Watcher):
    """Ends a batch's decoding once every request in it has given up; passes the tokens on to
    the watcher of a watched request."""

    def __init__(self, batch: list[_Request]):
        self.batch, self.inner = batch, batch[0].watcher

    def step(self) -> None:
        if all(r.done.done() for r in self.batch):
            raise StopDecoding("every request of the batch gave up")
        if self.inner:
            self.inner.step()

    def tokens(self, rows, tokens, finished, logits) -> None:
        if self.inner:
            self.inner.tokens(rows, tokens, finished, logits)


class Batcher:
    def __init__(self, runtime, *, max_batch: int, max_wait_ms: float, max_queue: int, metrics: Metrics | None = None):
        self.runtime, self.max_batch, self.max_wait = runtime, max_batch, max_wait_ms / 1000
        self.max_queue = max_queue
        self.metrics = metrics or Metrics()
        self.pending: list[_Request] = []
        self.waiting = 0  # records in self.pending
        self.wakeup = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modkit-infer")
        self.loop_task: asyncio.Task | None = None

    def start(self) -> None:
        self.loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """After the server has finished its requests: end the loop and the worker thread."""
        if self.loop_task:
            self.loop_task.cancel()
            try:
                await self.loop_task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, records: list[dict[str, Any]], options: Any, *,
                     watch: Watcher | None = None) -> list[dict[str, Any]]:
        """The results of ``records``; with ``watch``, run alone and watched token by token
        (a StopDecoding it raises ends the request with that exception)."""
        if self.waiting + len(records) > self.max_queue:
            raise Overloaded(f"{self.waiting} inputs are waiting (at most {self.max_queue})")
        request = _Request(records, options, asyncio.get_running_loop().create_future(), watch)
        self.pending.append(request)
        self._count_waiting(self.waiting + len(records))
        self.wakeup.set()
        return await request.done

    def _count_waiting(self, waiting: int) -> None:
        self.metrics.inc("modkit_queue_inputs", waiting - self.waiting)
        self.waiting = waiting

    def _take(self) -> list[_Request]:
        """The oldest live request and those behind it with its options, up to max_batch records
        (a watched request alone)."""
        self.pending = [r for r in self.pending if not r.done.done()]  # a timed-out request is cancelled
        if not self.pending:
            self._count_waiting(0)
            return []
        first, taken, size = self.pending[0], [], 0
        for request in list(self.pending):
            if (not taken or (first.watcher is None and request.watcher is None and request.options == first.options
                              and size + len(request.records) <= self.max_batch)):
                taken.append(request)
                size += len(request.records)
                self.pending.remove(request)
        self._count_waiting(sum(len(r.records) for r in self.pending))
        now = time.monotonic()
        for request in taken:
            self.metrics.observe("modkit_queue_seconds", now - request.arrived)
        return taken

    def _ready(self) -> bool:
        if not self.pending:
            return False
        first = self.pending[0]
        if first.watcher is not None:
            return True
        like = sum(len(r.records) for r in self.pending if r.options == first.options and r.watcher is None)
        return like >= self.max_batch or time.monotonic() - first.arrived >= self.max_wait

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                self.wakeup.clear()
                await self.wakeup.wait()
            while self.pending and not self._ready():  # let the batch fill, up to max_wait
                self.wakeup.clear()
                wait = self.max_wait - (time.monotonic() - self.pending[0].arrived)
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=max(wait, 0))
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            records = [rec for r in batch for rec in r.records]
            self.metrics.observe("modkit_batch_size", len(records))
            try:
                results = await loop.run_in_executor(self.executor, self._run, records, batch[0].options,
                                                     _Abandoned(batch))
            except Exception as e:  # the requests fail; the loop and the server go on
                if isinstance(e, StopDecoding):
                    self.metrics.inc("modkit_stopped_decodings_total")
                for r in batch:
                    if not r.done.done():
                        r.done.set_exception(e)
                continue
            self.metrics.inc("modkit_generated_tokens_total", sum(len(r.get("ids", ())) for r in results))
            start = 0
            for r in batch:
                if not r.done.done():
                    r.done.set_result(results[start:start + len(r.records)])
                start += len(r.records)

    def _run(self, records, options, watch: Watcher):
        token = watcher.set(watch)
        try:
            return self.runtime.run_validated(records, options, batch_size=self.max_batch)
        finally:
            watcher.reset(token)
