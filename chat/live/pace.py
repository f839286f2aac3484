"""Adaptive coalescing: how long a reply gathers text before publishing it."""

import asyncio

from django.conf import settings

from chat.live import metrics


class Pace:
    """How long a reply gathers text before publishing it: adaptive coalescing.

    STREAM_BATCH_SECONDS while few replies run. Two things stretch it:

    - the number of replies running: together they send at most
      STREAM_FRAMES_PER_SECOND, so each reply's share shrinks as more run. Each
      frame costs the process the same whatever text it carries (a channel
      message, a websocket frame, a wake-up of every socket on the conversation),
      so this keeps the cost of a busy process's frames flat, before it runs late;
    - the event loop running late all the same (a slow machine, other work):
      every reply waits longer still, until the loop catches up. The lateness is
      a moving average over every reply's batch timer.

    Either way a user sees bigger pieces of text rather than a stalled page.
    """

    MAX_SECONDS = 0.25  # even under load, text shows at least four times a second
    GAIN = 2.0  # seconds of extra wait per second of lateness

    def __init__(self, running=lambda: 0):
        self.running = running  # how many replies share the budget (chat.live.jobs)
        self.lateness = 0.0
        self.observed = 0

    def interval(self) -> float:
        share = self.running() / settings.STREAM_FRAMES_PER_SECOND
        wanted = max(settings.STREAM_BATCH_SECONDS, share) + self.GAIN * self.lateness
        return min(self.MAX_SECONDS, wanted)

    def observe(self, late: float):
        self.lateness += 0.05 * (max(0.0, late) - self.lateness)
        self.observed += 1
        if self.observed % 64 == 1:  # every reply's every frame comes here: a gauge now and then
            metrics.BATCH_SECONDS.set(self.interval())

    async def wait(self, nap: asyncio.Future | None = None):
        """Wait out the interval; or less, if whoever holds `nap` ends it (with True)
        first. An interval cut short says nothing of the loop's lateness."""
        loop = asyncio.get_running_loop()
        asked, interval = loop.time(), self.interval()
        nap = nap if nap is not None else loop.create_future()
        timer = loop.call_at(asked + interval, _ring, nap)
        try:
            cut_short = await nap
        finally:
            timer.cancel()
        if not cut_short:
            self.observe(loop.time() - asked - interval)


def _ring(nap: asyncio.Future):
    if not nap.done():
        nap.set_result(False)
