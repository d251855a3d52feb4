"""Dynamic micro-batching: pictures of concurrent requests gathered into one `predict` call.

A batch starts when the first picture arrives and closes when it holds `max_batch` pictures or
`max_wait_s` has passed, whichever comes first; while it runs, the next one gathers. Inference runs on one
thread of its own, off the event loop, so the server keeps reading requests while the model works, and one
batch at a time uses all the CPU threads torch was given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from torch import Tensor

Predict = Callable[[list[Tensor]], Sequence[dict[str, Tensor]]]


@dataclass
class _Waiting:
    picture: Tensor
    result: asyncio.Future


class MicroBatcher:
    def __init__(
        self,
        predict: Predict,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] | None = None,
    ):
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch  # told each batch's size (for the metrics)
        self._waiting: list[_Waiting] = []
        self._in_flight = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ssd-inference")
        self._arrived: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        """Pictures waiting for a batch or inside the running one."""
        return len(self._waiting) + self._in_flight

    def start(self) -> None:
        """Start gathering; called from the event loop that will submit."""
        self._arrived, self._full = asyncio.Event(), asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._gather_forever())

    async def detect(self, picture: Tensor) -> dict[str, Tensor]:
        """The detections for one picture, computed in a batch with whatever else is waiting."""
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        waiting = _Waiting(picture, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._arrived.set()
        if len(self._waiting) >= self.max_batch:
            self._full.set()
        return await waiting.result

    async def stop(self) -> None:
        """Finish every picture already submitted, then stop."""
        while self.depth:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def _gather_forever(self) -> None:
        while True:
            await self._arrived.wait()
            if len(self._waiting) < self.max_batch and self.max_wait_s > 0:
                try:  # give the requests arriving just after the first the chance to join its batch
                    await asyncio.wait_for(self._full.wait(), self.max_wait_s)
                except asyncio.TimeoutError:  # (builtin TimeoutError only from Python 3.11)
                    pass
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            if not self._waiting:
                self._arrived.clear()
            if len(self._waiting) < self.max_batch:
                self._full.clear()
            await self._run(batch)

    async def _run(self, batch: list[_Waiting]) -> None:
        # A client that went away has cancelled its future: its picture is not worth computing.
        batch = [waiting for waiting in batch if not waiting.result.done()]
        if not batch:
            return
        self._in_flight = len(batch)
        if self._on_batch is not None:
            self._on_batch(len(batch))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self._executor, self._predict, [waiting.picture for waiting in batch]
            )
        except Exception as error:  # every request of the batch hears of it; the server goes on
            for waiting in batch:
                if not waiting.result.done():
                    waiting.result.set_exception(error)
        else:
            for waiting, detections in zip(batch, results, strict=True):
                if not waiting.result.done():
                    waiting.result.set_result(detections)
        finally:
            self._in_flight = 0
