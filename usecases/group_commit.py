"""Group commit: the submissions that arrive while earlier ones are being stored are stored
together, in one worker thread and one transaction (`submitting.submit_group`).

Nothing waits to fill a group: a lane that is free takes what is waiting at once, so a
lone submission is stored as soon as it arrives, and a group is as large as the load made
it while the lanes were busy.
"""

from __future__ import annotations

import asyncio

from anyio.to_thread import run_sync

from usecases.admission import Accepted
from usecases.submitting import Parse, Posted, submit_group
from usecases.unit_of_work import Context

LANES = 1  # groups stored at once by one process (each holds a thread and a connection)
MAX_GROUP = 64  # submissions in one group


class GroupCommit:
    """Forms groups of the submissions posted to one process and stores them."""

    def __init__(
        self, ctx: Context, parse: Parse, lanes: int = LANES, max_group: int = MAX_GROUP
    ) -> None:
        self.ctx, self.parse, self.lanes, self.max_group = ctx, parse, lanes, max_group
        self._waiting: list[tuple[Posted, asyncio.Future]] = []
        self._busy = 0
        self._drains: set[asyncio.Task] = set()

    async def submit(self, posted: Posted) -> Accepted:
        """Store `posted` with the others waiting; its `Accepted`, or its error raised."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((posted, future))
        if self._busy < self.lanes:
            self._busy += 1
            drain = asyncio.create_task(self._drain())
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _drain(self) -> None:
        group: list[tuple[Posted, asyncio.Future]] = []
        try:
            while self._waiting:
                group = self._waiting[: self.max_group]
                del self._waiting[: self.max_group]
                try:
                    outcomes = await run_sync(
                        submit_group, self.ctx, [p for p, _ in group], self.parse
                    )
                except Exception as exc:  # not one submission's fault: all get it
                    outcomes = [exc] * len(group)
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    if not future.done():  # its client may have gone
                        future.set_result(outcome)
        finally:
            self._busy -= 1
            for _, future in group:  # stopped mid-group (the process is shutting down)
                if not future.done():
                    future.set_result(RuntimeError("the API stopped before storing this"))
