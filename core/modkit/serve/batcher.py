"""Dynamic batching: requests from many clients share graph calls (asyncio + one worker thread).

Each request's records join a queue; a loop takes the oldest request and every request
waiting behind it with the same options, until ``max_batch`` records or ``max_wait_ms`` after
the oldest arrived, runs them through the runtime in one call, and hands each request its
slice of the results. Inference runs in one thread, so the event loop keeps accepting and
validating requests meanwhile (onnxruntime releases the GIL).
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class Overloaded(Exception):
    """More records are waiting than the queue holds."""


@dataclass
class _Request:
    records: list[dict[str, Any]]
    options: Any  # the task's validated options model (frozen, so hashable)
    done: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, runtime, *, max_batch: int, max_wait_ms: float, max_queue: int):
        self.runtime, self.max_batch, self.max_wait = runtime, max_batch, max_wait_ms / 1000
        self.max_queue = max_queue
        self.pending: list[_Request] = []
        self.waiting = 0  # records in self.pending
        self.wakeup = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modkit-infer")
        self.figures = {"requests": 0, "inputs": 0, "batches": 0}
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

    async def submit(self, records: list[dict[str, Any]], options: Any) -> list[dict[str, Any]]:
        if self.waiting + len(records) > self.max_queue:
            raise Overloaded(f"{self.waiting} inputs are waiting (at most {self.max_queue})")
        request = _Request(records, options, asyncio.get_running_loop().create_future())
        self.pending.append(request)
        self.waiting += len(records)
        self.wakeup.set()
        return await request.done

    def _take(self) -> list[_Request]:
        """The oldest live request and those behind it with its options, up to max_batch records."""
        self.pending = [r for r in self.pending if not r.done.done()]  # a timed-out request is cancelled
        self.waiting = sum(len(r.records) for r in self.pending)
        if not self.pending:
            return []
        first, taken, size = self.pending[0], [], 0
        for request in list(self.pending):
            if request.options == first.options and (not taken or size + len(request.records) <= self.max_batch):
                taken.append(request)
                size += len(request.records)
                self.pending.remove(request)
                self.waiting -= len(request.records)
        return taken

    def _ready(self) -> bool:
        if not self.pending:
            return False
        first = self.pending[0]
        like = sum(len(r.records) for r in self.pending if r.options == first.options)
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
            try:
                results = await loop.run_in_executor(self.executor, self._run, records, batch[0].options)
            except Exception as e:  # the requests fail; the loop and the server go on
                for r in batch:
                    if not r.done.done():
                        r.done.set_exception(e)
                continue
            self.figures["batches"] += 1
            self.figures["requests"] += len(batch)
            self.figures["inputs"] += len(records)
            start = 0
            for r in batch:
                if not r.done.done():
                    r.done.set_result(results[start:start + len(r.records)])
                start += len(r.records)

    def _run(self, records, options):
        return self.runtime.run_validated(records, options, batch_size=self.max_batch)
