"""A small asynchronous micro-batcher: requests that arrive together share one forward pass.

The first request of a batch waits at most ``max_wait`` seconds for others; a batch holds up to
``max_batch`` items (a request's items always stay together); while the model runs one batch,
the next requests queue up and go together in the following one. At most ``max_queue`` items
wait: beyond that :class:`Busy` is raised at once, so memory stays bounded under load.

Example:
    >>> import asyncio
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> async def main():
    ...     batcher = MicroBatcher(lambda xs: [x * 2 for x in xs], ThreadPoolExecutor(1))
    ...     return await asyncio.gather(batcher.submit([1, 2]), batcher.submit([3]))
    >>> asyncio.run(main())
    [[2, 4], [6]]
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any


class Busy(Exception):
    """More items are waiting than the batcher holds."""


@dataclass
class _Job:
    items: list
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Runs ``run(items) -> results`` (one result per item, in order) on ``executor``, batching
    the items of concurrent :meth:`submit` calls.

    Args:
        run: the batched function; it runs in ``executor`` (one thread keeps forwards in order).
        executor: where ``run`` runs.
        max_batch: items per call of ``run`` (more only when one request alone holds more).
        max_wait: seconds the first request waits for others to join its batch.
        max_queue: items waiting at most; :meth:`submit` raises :class:`Busy` beyond it.
    """

    def __init__(self, run: Callable[[list], Sequence[Any]], executor: Executor,
                 max_batch: int = 32, max_wait: float = 0.005, max_queue: int = 256):
        if max_batch < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError(f"max_batch and max_queue must be at least 1 and max_wait at least "
                             f"0; got {max_batch}, {max_queue}, {max_wait}.")
        self.run, self.executor = run, executor
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self.waiting = 0  # items submitted and not yet answered
        self.count = 0  # batches run
        self.largest = 0  # items in the largest batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._carry: _Job | None = None

    async def submit(self, items: Sequence[Any]) -> list:
        """The results for ``items``, computed in a batch with other requests' items."""
        items = list(items)
        if not items:
            return []
        if self.waiting + len(items) > self.max_queue:
            raise Busy(f"{self.waiting} items are waiting for the model (at most "
                       f"{self.max_queue}).")
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._carry = None
            self._worker = loop.create_task(self._loop())
        job = _Job(items, loop.create_future())
        self.waiting += len(items)
        self._queue.put_nowait(job)
        return await job.future

    async def close(self) -> None:
        """Stop the worker (requests still waiting are cancelled)."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            jobs = await self._collect()
            await self._run(jobs)

    async def _collect(self) -> list[_Job]:
        loop = asyncio.get_running_loop()
        first = self._carry or await self._queue.get()
        self._carry = None
        jobs, count = [first], len(first.items)
        deadline = loop.time() + self.max_wait
        while count < self.max_batch:
            try:
                if not self._queue.empty():
                    job = self._queue.get_nowait()
                else:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    job = await asyncio.wait_for(self._queue.get(), left)
            except asyncio.TimeoutError:
                break
            if count + len(job.items) > self.max_batch:
                self._carry = job  # the first of the next batch
                break
            jobs.append(job)
            count += len(job.items)
        return jobs

    async def _run(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        live = [job for job in jobs if not job.future.done()]  # cancelled: client went away
        items = [item for job in live for item in job.items]
        try:
            if items:
                self.count += 1
                self.largest = max(self.largest, len(items))
                results = await loop.run_in_executor(self.executor, self.run, items)
                if len(results) != len(items):
                    raise RuntimeError(f"the batched function returned {len(results)} results "
                                       f"for {len(items)} items.")
                start = 0
                for job in live:
                    if not job.future.done():
                        job.future.set_result(list(results[start:start + len(job.items)]))
                    start += len(job.items)
        except Exception as err:
            for job in live:
                if not job.future.done():
                    job.future.set_exception(err)
        finally:
            self.waiting -= sum(len(job.items) for job in jobs)
