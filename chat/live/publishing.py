"""What a running reply shows: numbered, coalesced deltas (chat.live.jobs.Job's half
that publishes them).

The first token goes out at once, then one batch per interval (Pace: the interval
stretches when the event loop runs late), each rendered once for every socket on
the conversation (chat.markdown.live, chat.live.events). Markdown being typed is
redrawn less often than plain prose and code, which cost next to nothing to add.
The job's own state (its text, thinking, caps and tasks) is chat.live.jobs's.
"""

import asyncio
import logging
import time

from django.conf import settings

from chat.live import events, metrics
from chat.live.pace import Pace
from chat.models import thought_label_seconds

log = logging.getLogger(__name__)

SLOW_TAIL_SECONDS = 0.1  # Markdown being typed is redrawn ten times a second (see _answer_due)
PACE = Pace()  # one for the process: lateness is the loop's, not a reply's


class Publishing:
    """Publishing for a Job: the loop, the deltas, and the snapshot for a late joiner."""

    async def publish_loop(self):
        """First token at once, then at most one delta per batch interval.

        If publishing itself breaks, the reply ends as failed (its text is kept);
        it must not run on unseen, nor take the other replies down with it.
        """
        try:
            await self.shown.wait()  # the reply's turns are on the page (start's caller)
            while not self.done:
                await self.wakeup.wait()
                self.wakeup.clear()
                await self.flush()
                if self.answer_changed:
                    self.wakeup.set()  # held back (a slow tail): again after the wait
                if not self.done:
                    self.nap = asyncio.get_running_loop().create_future()
                    await PACE.wait(self.nap)
            await self.flush()
        except Exception:
            log.exception("reply %s: publishing failed", self.message_id)
            self.fail()
            self.pump_task.cancel()

    def wake(self):
        """The reply ended: its last delta goes out now, not at the end of the interval
        (the page waits for the final frame, which comes after it)."""
        self.done = True
        self.wakeup.set()
        if self.nap is not None and not self.nap.done():
            self.nap.set_result(True)

    def _answer_due(self) -> bool:
        """Plain prose and code show at every flush (they cost next to nothing); a tail that
        needs the parser, at most every SLOW_TAIL_SECONDS, stretched as Pace stretches."""
        if not self.answer_changed or self.done or self.reset:
            return self.answer_changed
        wait = SLOW_TAIL_SECONDS * PACE.interval() / settings.STREAM_BATCH_SECONDS
        recent = time.monotonic() - self.last_parse < wait
        return not recent or self.live.is_quick(self.text())

    async def flush(self):
        answer_due = self._answer_due()
        if not (self.new_thought or answer_due or self.reset or self.label):
            return
        reset, change = self.reset, events.LiveChange()
        change.reasoning = "".join(self.thought if reset else self.new_thought)
        self.thought_shown = list(self.thought) if reset else self.thought_shown + self.new_thought
        self.new_thought.clear()
        if answer_due:
            update = self.live.update(self.text())
            change.frozen, change.tail = update.frozen, update.tail
            change.tail_text, change.tail_added = self.live.tail_text(), update.tail_added
            change.tail_into = update.tail_into
            self.last_parse = time.monotonic() if update.parsed else self.last_parse
            self.answer_changed = False
        change.label, self.label = self.label, ""
        self.reset = False
        self.seq += 1
        now = time.monotonic()
        if self.seq == 1 and self.first_token_at is not None:
            metrics.RELAY_ADDED.observe(now - self.first_token_at)
        else:
            metrics.FRAME_GAP.observe(now - self.last_flush)
        self.last_flush = now
        frames = events.live_frames(self.message_id, change, reset=reset)
        await events.publish_delta(self.plan.conversation_id, self.message_id, self.seq, frames)

    def snapshot_frames(self) -> list[str]:
        """The reply as published so far (at self.seq), for a socket that joins late."""
        frozen, tail = self.live.snapshot()
        label = ""
        if self.thought_shown and not self.live.text:
            label = "Thinking…"
        elif self.thought_shown:
            label = "Thought for " + thought_label_seconds(self.thinking_seconds or 0)
        change = events.LiveChange("".join(self.thought_shown), frozen, tail,
                                   self.live.tail_text(), label)  # fmt: skip
        return events.live_frames(self.message_id, change, reset=True)
