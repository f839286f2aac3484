"""Generation jobs: one asyncio task per reply, independent of any socket.

A job reads the provider's stream, keeps the growing text, saves it at most
about once a second (and at the end), and publishes numbered, coalesced deltas
to the conversation's channel-layer group: the first token at once, then one
batch every STREAM_BATCH_SECONDS. Sockets only subscribe, so closing a tab does
not stop a reply.

Each job also listens on the group `job.<message id>` for two commands that may
come from any process: `job.stop` (cancel the stream, which closes the upstream
connection) and `job.snapshot` (send the text so far and its sequence number to
a socket that is joining, so it can drop deltas it already has).
"""

import asyncio
import contextvars
import functools
import logging
import time
import weakref
from contextlib import aclosing, suppress
from dataclasses import dataclass
from decimal import Decimal

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from chat import bounds, frames, titles
from chat.db import db_async
from chat.models import Message, UsageRecord
from providers import client
from providers.base import ChatRequest, Endpoint, Finish, ProviderError, TextDelta, Usage

log = logging.getLogger(__name__)
Status = Message.Status

JOBS: dict[int, "Job"] = {}  # this process's running jobs, by message id
CHARS_PER_TOKEN = 5  # for counting tokens of a backend that sends long pieces of text
FINAL_SAVE_ATTEMPTS = 8  # the database may be briefly away; the text waits in memory
FAILED_NOTE = "The reply failed on the server; the text so far is kept. Try Regenerate."


def job_group(message_id: int) -> str:
    return f"job.{message_id}"


@dataclass(frozen=True)
class Plan:
    """Everything a job needs, read from the ORM before it starts."""

    message_id: int
    user_id: int
    group: str  # the conversation's group
    endpoint: Endpoint
    request: ChatRequest
    price_in: Decimal | None = None  # per million tokens
    price_out: Decimal | None = None
    prompt_estimate: int = 0
    cut_tokens: int = 16_384  # see chat.bounds: the reply is cut past these
    cut_bytes: int = 256 * 1024
    cut_reason: str = "length"
    title_for: tuple | None = None  # (conversation id, first question, provisional title)


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
        self.cut_note = FAILED_NOTE

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
                    await asyncio.sleep(settings.STREAM_BATCH_SECONDS)
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
        event = {"type": "gen.delta", "message_id": self.message_id, "seq": self.seq, "text": text}
        await _send_quietly(self.plan.group, event)

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
            if message.get("type") == "job.stop":
                self.stop_requested = True
                pump.cancel()
            elif message.get("type") == "job.snapshot":
                snapshot = {
                    "type": "gen.snapshot",
                    "message_id": self.message_id,
                    "seq": self.seq,
                    "text": "".join(self.flushed),
                }
                with suppress(Exception):
                    await layer.send(message["reply_to"], snapshot)

    # --- saving ----------------------------------------------------------------
    def save_due(self, now: float) -> bool:
        """Changed since the last save, or quiet so long that the row needs a heartbeat."""
        heartbeat = settings.STREAM_STALE_SECONDS / 3
        return self.text_length() != self.saved_chars or now - self.last_save >= heartbeat

    def text_length(self) -> int:
        return self.chars

    def final_fields(self) -> dict:
        text = self.text()
        ended = time.monotonic()
        prompt, completion = self.usage.prompt_tokens, self.usage.completion_tokens
        estimated = prompt is None or completion is None
        if self.first_token_at is None and self.status == Status.ERROR and estimated:
            prompt = completion = 0  # failed before the backend produced anything: free
            estimated = False
        if prompt is None:
            prompt = self.plan.prompt_estimate
        if completion is None:
            completion = self.tokens_estimate()
        fields = {
            "content": text,
            "status": self.status,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "tokens_estimated": estimated,
            "cost": self._cost(prompt, completion),
            "finish_reason": "length" if self.cut_note else self.finish,
            "updated": timezone.now(),
        }
        if self.first_token_at is not None:
            fields["ttft_ms"] = min(round((self.first_token_at - self.started) * 1000), 2**31 - 1)
            streaming_time = ended - self.first_token_at
            if streaming_time > 0 and completion > 1:
                fields["tokens_per_second"] = round((completion - 1) / streaming_time, 1)
        if self.error is not None:
            fields["error_kind"] = self.error.kind
            fields["error_message"] = self.error.message[:300]
        elif self.cut_note:
            fields["error_message"] = self.cut_note
            if self.failed:
                fields["error_kind"] = "internal"
        return fields

    def ledger_fields(self, fields: dict) -> dict:
        """The ledger row's final numbers, from the message's."""
        if self.usage.cost is not None:
            source = UsageRecord.CostSource.PROVIDER
        elif fields["cost"] is not None:
            source = UsageRecord.CostSource.PRICES
        else:
            source = UsageRecord.CostSource.NONE
        return {
            "prompt_tokens": fields["prompt_tokens"],
            "completion_tokens": fields["completion_tokens"],
            "tokens_estimated": fields["tokens_estimated"],
            "cost": fields["cost"] or 0,
            "cost_source": source,
            "latency_ms": fields.get("ttft_ms"),
            "duration_ms": round((time.monotonic() - self.started) * 1000),
            "status": fields["status"],
        }

    def _cost(self, prompt: int, completion: int) -> Decimal | None:
        if self.usage.cost is not None:
            return self.usage.cost
        if self.plan.price_in is None and self.plan.price_out is None:
            return None
        million = Decimal(1_000_000)
        return (
            (self.plan.price_in or 0) * prompt + (self.plan.price_out or 0) * completion
        ) / million


async def _send_quietly(group: str, event: dict):
    """Publish; a channel-layer hiccup must not lose the reply (sockets resync on rejoin)."""
    try:
        await get_channel_layer().group_send(group, event)
    except Exception:
        log.warning("could not publish to %s", group)


def _fresh_connection_on_failure(function):
    """A failed write drops its connection, so the retry reconnects instead of
    reusing a connection the database (or a failover) already closed."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except DatabaseError:
            with suppress(Exception):
                connection.close()
            raise

    return wrapper


@db_async
@_fresh_connection_on_failure
def save_partials(batch: list[tuple[int, str]]):
    """The growing text of every running reply, in one transaction on one connection."""
    now = timezone.now()
    with transaction.atomic():
        for message_id, text in batch:
            Message.objects.filter(pk=message_id, status=Status.STREAMING).update(
                content=text, updated=now
            )


async def _save_batch(batch: list[tuple[int, str]]) -> set[int]:
    """Save the batch; ids saved. A row that cannot be saved must not stop the others."""
    try:
        await save_partials(batch)
        return {message_id for message_id, _ in batch}
    except DatabaseError:
        log.warning("could not save %d running replies; will retry", len(batch))
        return set()
    except Exception:
        log.exception("saving %d running replies failed; saving them one by one", len(batch))
    saved = set()
    for item in batch:
        try:
            await save_partials([item])
            saved.add(item[0])
        except Exception:
            log.warning("could not save the text of reply %s", item[0])
    return saved


async def _save_forever():
    """One saver per process: about once a second it saves what every reply has so far.

    Batching matters: a hundred replies saving on their own would open a hundred
    database connections a second and fight the relay for the interpreter. It
    outlives any failure: one bad reply never stops the saving of the others.
    """
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(settings.STREAM_SAVE_SECONDS)
        try:
            await _save_due(loop)
        except Exception:
            log.exception("partial save round failed; will retry")


async def _save_due(loop):
    now = time.monotonic()
    due = [
        job
        for job in list(JOBS.values())
        if job.task is not None and job.task.get_loop() is loop and job.save_due(now)
    ]
    if not due:
        return
    batch = [(job.message_id, job.text()) for job in due]
    saved = await _save_batch(batch)
    for job, (message_id, text) in zip(due, batch, strict=True):
        if message_id in saved:
            job.saved_chars, job.last_save = len(text), now


_savers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = (
    weakref.WeakKeyDictionary()
)


def _ensure_saver(loop: asyncio.AbstractEventLoop):
    task = _savers.get(loop)
    if task is None or task.done():
        _savers[loop] = loop.create_task(_save_forever(), context=contextvars.Context())


@db_async
@_fresh_connection_on_failure
def save_final(message_id: int, fields: dict, ledger: dict):
    with transaction.atomic():
        Message.objects.filter(pk=message_id).update(**fields)
        UsageRecord.objects.filter(message_id=message_id).update(**ledger)


@db_async
def final_frames(message_id: int) -> list[str]:
    message = Message.objects.select_related("conversation").get(pk=message_id)
    try:
        return frames.message(message)
    except Exception:
        log.exception("could not render reply %s; sending it as plain text", message_id)
        return frames.message(message, plain=True)


async def run(job: Job):
    try:
        await _stream_and_finish(job)
    finally:
        JOBS.pop(job.message_id, None)  # whatever happened, this job is over
    if job.plan.title_for and job.status == Status.COMPLETE:
        conversation_id, question, provisional = job.plan.title_for
        try:
            await titles.generate(job.plan, conversation_id, question, provisional)
        except Exception:
            log.exception("title for conversation %s failed", conversation_id)


async def _stream_and_finish(job: Job):
    layer = get_channel_layer()
    control = await layer.new_channel()
    with suppress(Exception):
        await layer.group_add(job_group(job.message_id), control)
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
        await _finish(job)
        with suppress(Exception):
            await layer.group_discard(job_group(job.message_id), control)


def _ending(job: Job) -> tuple[dict, dict]:
    """The final row and ledger values; if computing them fails, the plainest honest ones."""
    try:
        fields = job.final_fields()
        return fields, job.ledger_fields(fields)
    except Exception:
        log.exception("reply %s: could not compute its final numbers", job.message_id)
        job.fail()
        return _ending_after_failure(job)


async def _save_ending(job: Job, fields: dict, ledger: dict) -> bool:
    for attempt in range(FINAL_SAVE_ATTEMPTS):
        try:
            await save_final(job.message_id, fields, ledger)
            return True
        except DatabaseError as error:
            log.warning(
                "final save of reply %s failed (attempt %d): %s", job.message_id, attempt + 1, error
            )
            await asyncio.sleep(min(0.25 * 2**attempt, 5))
        except Exception:
            if job.failed:
                break
            log.exception("reply %s: its final values could not be saved", job.message_id)
            job.fail()
            fields, ledger = _ending_after_failure(job)
    log.error("reply %s could not be saved; it stays streaming until recovery", job.message_id)
    return False


def _ending_after_failure(job: Job) -> tuple[dict, dict]:
    return (
        {"content": job.text(), "status": Status.ERROR, "error_kind": "internal",
         "error_message": FAILED_NOTE, "updated": timezone.now()},
        {"status": Status.ERROR, "completion_tokens": job.tokens_estimate(),
         "tokens_estimated": True},
    )  # fmt: skip


async def _finish(job: Job):
    fields, ledger = _ending(job)
    if not await _save_ending(job, fields, ledger):
        return
    try:
        html = await final_frames(job.message_id)
    except Message.DoesNotExist:
        return  # deleted meanwhile (conversation deleted): nobody to tell
    except Exception:
        log.exception("could not render reply %s", job.message_id)
        return
    await _send_quietly(
        job.plan.group,
        {"type": "gen.done", "message_id": job.message_id, "status": job.status, "frames": html},
    )


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
    _ensure_saver(loop)
    job.task.add_done_callback(_log_crash)
    return job


def _log_crash(task: asyncio.Task):
    if not task.cancelled() and task.exception() is not None:
        log.error("generation job crashed", exc_info=task.exception())


async def request_stop(message_id: int):
    await _send_quietly(job_group(message_id), {"type": "job.stop"})


async def request_snapshot(message_id: int, reply_to: str):
    await _send_quietly(job_group(message_id), {"type": "job.snapshot", "reply_to": reply_to})


async def shutdown(grace_seconds: float = 8.0):
    """Stop every running reply as `interrupted` and save all its text (graceful restarts)."""
    tasks = [job.task for job in JOBS.values() if job.task is not None]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=grace_seconds)
