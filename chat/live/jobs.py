"""Generation jobs: one asyncio task per reply, independent of any socket.

A job reads the provider's stream, keeps the growing text (within the reply's
caps), and publishes numbered, coalesced deltas through chat.live.events: the
first token at once, then one batch per interval (see Pace). Sockets only
subscribe, so closing a tab does not stop a reply. The partial-text saver
(chat.live.saver) saves it about once a second; chat.live.ending saves and
announces how it ended.

Each job also listens on its own group for two commands that may come from any
process: stop (cancel the stream, which closes the upstream connection) and
snapshot (send the text so far and its sequence number to a socket that is
joining, so it can drop deltas it already has).
"""

import asyncio
import contextvars
import logging
import time
from contextlib import aclosing, suppress

from channels.layers import get_channel_layer
from django.conf import settings

from chat.governance import bounds
from chat.live import ending, events, metrics, titles
from chat.models import Message
from chat.plan import Plan
from providers import client
from providers.base import Finish, ProviderError, TextDelta, Usage

log = logging.getLogger(__name__)
Status = Message.Status

JOBS: dict[int, "Job"] = {}  # this process's running jobs, by message id
CHARS_PER_TOKEN = 5  # for counting tokens of a backend that sends long pieces of text


class Pace:
    """How long a reply gathers text before publishing it: adaptive coalescing.

    STREAM_BATCH_SECONDS while the event loop keeps time. When it runs late (too
    many streams for one process), every reply waits longer and sends fewer,
    larger frames, so the per-frame work shrinks until the loop catches up; a
    user sees bigger pieces of text rather than a stalled page. The lateness is
    a moving average over every reply's batch timer.
    """

    MAX_SECONDS = 0.25  # even under load, text shows at least four times a second
    GAIN = 2.0  # seconds of extra wait per second of lateness

    def __init__(self):
        self.lateness = 0.0

    def interval(self) -> float:
        wanted = settings.STREAM_BATCH_SECONDS + self.GAIN * self.lateness
        return min(self.MAX_SECONDS, wanted)

    def observe(self, late: float):
        self.lateness += 0.05 * (max(0.0, late) - self.lateness)
        metrics.BATCH_SECONDS.set(self.interval())

    async def wait(self):
        loop = asyncio.get_running_loop()
        asked, interval = loop.time(), self.interval()
        await asyncio.sleep(interval)
        self.observe(loop.time() - asked - interval)


PACE = Pace()


class Job:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.flushed: list[str] = []  # text already published, in order
        self.pending: list[str] = []  # text received, not yet published
        self.seq = 0  # number of deltas published
        self.usage = Usage()
        self.finish = ""
        self.status = Status.STREAMING
        self.error: ProviderError | None = None
        self.stop_requested = False
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.done = False
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.saved_chars = 0
        self.last_save = time.monotonic()
        self.deltas = 0  # text events received: about one token each
        self.chars = 0
        self.bytes = 0
        self.cut_note = ""  # why the reply was cut short, when it was
        self.last_flush = 0.0
        self.failed = False

    @property
    def message_id(self) -> int:
        return self.plan.message_id

    def text(self) -> str:
        return "".join(self.flushed) + "".join(self.pending)

    def tokens_estimate(self) -> int:
        """Tokens received so far: one per text event, or more if events carry long text."""
        return max(self.deltas, self.chars // CHARS_PER_TOKEN)

    def take(self, text: str) -> bool:
        """Keep more text; False (and the text trimmed to fit) once a cap is reached."""
        size = len(text.encode())
        if self.bytes + size > self.plan.cut_bytes:
            room = self.plan.cut_bytes - self.bytes
            text = text.encode()[:room].decode(errors="ignore")
            self._keep(text, len(text.encode()))
            self.cut_note = bounds.REASONS["length"]
            return False
        self.deltas += 1
        if max(self.deltas, (self.chars + len(text)) // CHARS_PER_TOKEN) > self.plan.cut_tokens:
            self.deltas -= 1
            self.cut_note = bounds.REASONS[self.plan.cut_reason]
            return False
        self._keep(text, size)
        return True

    def _keep(self, text: str, size: int):
        if not text:
            return
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.pending.append(text)
        self.chars += len(text)
        self.bytes += size
        self.wakeup.set()

    # --- reading the provider ----------------------------------------------
    async def pump(self):
        try:
            async with aclosing(client.stream(self.plan.endpoint, self.plan.request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        if not self.take(event.text):
                            break  # leaving the block closes the upstream connection
                    elif isinstance(event, Usage):
                        self.usage = event
                    elif isinstance(event, Finish):
                        self.finish = event.reason
            if not self.failed:
                self.status = Status.STOPPED if self.cut_note else Status.COMPLETE
        except ProviderError as error:
            log.warning("reply %s failed: %s", self.message_id, error)
            self.status, self.error = Status.ERROR, error
        except asyncio.CancelledError:
            if self.failed:
                return
            if not self.stop_requested:
                self.status = Status.INTERRUPTED  # the process is going away
                raise
            self.status = Status.STOPPED
        except Exception:
            log.exception("reply %s crashed", self.message_id)
            self.fail()

    def fail(self):
        """A bug or an unexpected state on our side: the reply ends as failed, text kept."""
        self.failed = True
        self.status = Status.ERROR
        self.cut_note = ending.FAILED_NOTE

    # --- publishing ----------------------------------------------------------
    async def publish_loop(self, pump: asyncio.Task):
        """First token at once, then at most one delta per batch interval.

        If publishing itself breaks, the reply ends as failed (its text is kept);
        it must not run on unseen, nor take the other replies down with it.
        """
        try:
            while not self.done:
                await self.wakeup.wait()
                self.wakeup.clear()
                await self.flush()
                if not self.done:
                    await PACE.wait()
            await self.flush()
        except Exception:
            log.exception("reply %s: publishing failed", self.message_id)
            self.fail()
            pump.cancel()

    async def flush(self):
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending.clear()
        self.flushed.append(text)
        self.seq += 1
        now = time.monotonic()
        if self.seq == 1:
            metrics.RELAY_ADDED.observe(now - self.first_token_at)
        else:
            metrics.FRAME_GAP.observe(now - self.last_flush)
        self.last_flush = now
        await events.publish_delta(self.plan.conversation_id, self.message_id, self.seq, text)

    async def listen(self, channel: str, pump: asyncio.Task):
        layer = get_channel_layer()
        while not self.done:
            try:
                message = await layer.receive(channel)
            except Exception:
                # The channel layer is restarting: keep trying, unless we are being
                # cancelled (a layer may turn the cancellation into its own error).
                if asyncio.current_task().cancelling():
                    raise asyncio.CancelledError from None
                await asyncio.sleep(0.5)
                continue
            if events.is_stop(message):
                self.stop_requested = True
                pump.cancel()
            elif events.is_snapshot_request(message):
                text = "".join(self.flushed)
                await events.send_snapshot(message["reply_to"], self.message_id, self.seq, text)

    # --- saving ----------------------------------------------------------------
    def save_due(self, now: float) -> bool:
        """Changed since the last save, or quiet so long that the row needs a heartbeat."""
        heartbeat = settings.STREAM_STALE_SECONDS / 3
        return self.text_length() != self.saved_chars or now - self.last_save >= heartbeat

    def text_length(self) -> int:
        return self.chars


async def run(job: Job):
    try:
        await _stream_and_finish(job)
    finally:
        JOBS.pop(job.message_id, None)  # whatever happened, this job is over
    if job.plan.title_for and job.status == Status.COMPLETE:
        question, provisional = job.plan.title_for
        try:
            await titles.generate(job.plan, question, provisional)
        except Exception:
            log.exception("title for conversation %s failed", job.plan.conversation_id)


async def _stream_and_finish(job: Job):
    layer = get_channel_layer()
    control = await layer.new_channel()
    with suppress(Exception):
        await layer.group_add(events.job_group(job.message_id), control)
    pump = asyncio.create_task(job.pump())
    helpers = [
        asyncio.create_task(job.publish_loop(pump)),
        asyncio.create_task(job.listen(control, pump)),
    ]
    try:
        await asyncio.shield(pump)
    except asyncio.CancelledError:
        pump.cancel()  # this process is shutting down: keep the text as interrupted
        job.status = Status.INTERRUPTED
    finally:
        job.done = True
        job.wakeup.set()
        await asyncio.wait(helpers[:1], timeout=5)  # the last delta goes out before the end
        for helper in helpers:
            helper.cancel()
        await asyncio.wait(helpers, timeout=2)
        await ending.finish(job)
        with suppress(Exception):
            await layer.group_discard(events.job_group(job.message_id), control)


def start(plan: Plan) -> Job:
    """Run the reply in the background, outliving the request or socket that asked for it.

    The task gets a fresh context: Django runs each request inside asgiref's
    ThreadSensitiveContext, and a task that inherited it could not reach the
    database once the request that started it had finished.
    """
    job = Job(plan)
    JOBS[plan.message_id] = job
    loop = asyncio.get_running_loop()
    job.task = loop.create_task(run(job), context=contextvars.Context())
    job.task.add_done_callback(_log_crash)
    return job


def _log_crash(task: asyncio.Task):
    if not task.cancelled() and task.exception() is not None:
        log.error("generation job crashed", exc_info=task.exception())


async def shutdown(grace_seconds: float = 8.0):
    """Stop every running reply as `interrupted` and save all its text (graceful restarts)."""
    tasks = [job.task for job in JOBS.values() if job.task is not None]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=grace_seconds)
