"""Generation jobs: one asyncio task per reply, independent of any socket.

A job reads the provider's stream, keeps the growing text and thinking (within
the reply's caps), and publishes numbered, coalesced deltas (chat.live.publishing:
the first token at once, then one batch per interval). Sockets only
subscribe, so closing a tab does not stop a reply. chat.live.saver saves the
text about once a second; chat.live.ending saves and announces how it ended.
A job may also continue a reply in place (Plan.resume): it starts from its text.

Two commands reach a job from any process, through its process's listener
(chat.live.control): stop (cancel the stream, closing the upstream connection)
and snapshot (the reply as published so far, with its sequence number, for a
socket that is joining).
"""

import asyncio
import contextvars
import logging
import time
from contextlib import aclosing

from django.conf import settings

from chat.governance import bounds
from chat.live import ending, events, publishing, titles
from chat.markdown.live import LiveMarkdown
from chat.models import Message, thought_label_seconds
from chat.plan import Plan
from providers import client, network
from providers.base import (
    AnswerWasReasoning,
    Finish,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    Usage,
)

log = logging.getLogger(__name__)
Status = Message.Status

JOBS: dict[int, "Job"] = {}  # this process's running jobs, by message id
publishing.PACE.running = JOBS.__len__  # they share the process's frames (chat.live.pace)
CHARS_PER_TOKEN = 5  # for counting tokens of a backend that sends long pieces of text


class Job(publishing.Publishing):
    def __init__(self, plan: Plan):
        self.plan = plan
        self.answer: list[str] = []  # the reply's text, as received
        self.thought: list[str] = []  # its reasoning, as received
        self.thought_shown: list[str] = []  # the reasoning published so far
        self.new_thought: list[str] = []  # reasoning received, not yet published
        self.answer_changed = False  # answer text received, not yet published
        self.reset = False  # the next delta replaces everything (the answer was thinking)
        self.live = LiveMarkdown(settings.WS_FRAME_BYTES - 512)
        self.thinking_since: float | None = None
        self.thinking_seconds: float | None = None  # set when the answer starts
        self.label = ""  # the thinking block's new label, not yet published
        self.seq = 0  # number of deltas published
        self.usage = Usage()
        self.finish = ""
        self.status = Status.STREAMING
        self.error: ProviderError | None = None
        self.stop_requested = False
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.done, self.wakeup, self.task, self.pump_task = False, asyncio.Event(), None, None
        self.nap: asyncio.Future | None = None  # the publishing interval being waited out
        self.shown = asyncio.Event()  # set once the page can take the reply's deltas
        self.saved_chars, self.last_save = 0, time.monotonic()
        self.deltas = self.chars = self.bytes = 0  # text events (about one token each), size
        self.cut_note = ""  # why the reply was cut short, when it was
        self.last_flush = 0.0
        self.last_parse = float("-inf")  # when the tail last needed the Markdown parser
        self.failed = False
        if resume := plan.resume:  # continuing a reply: start from its text, drawn again
            self.answer, self.thought = [resume.text], [resume.reasoning][: bool(resume.reasoning)]
            self.thought_shown, self.thinking_seconds = list(self.thought), resume.reasoning_seconds
            self.bytes = len(resume.text.encode()) + len(resume.reasoning.encode())
            self.reset = self.answer_changed = True  # at once, so a late joiner sees it whole
            self.wakeup.set()

    @property
    def message_id(self) -> int:
        return self.plan.message_id

    def text(self) -> str:
        """The answer so far (what is saved as the message's content)."""
        if len(self.answer) > 1:
            self.answer[:] = ["".join(self.answer)]  # joined once, not at every call
        return self.answer[0] if self.answer else ""

    def reasoning_text(self) -> str:
        return "".join(self.thought)

    def tokens_estimate(self) -> int:
        """Tokens received so far: one per text event, or more if events carry long text."""
        return max(self.deltas, self.chars // CHARS_PER_TOKEN)

    def take(self, text: str, reasoning: bool = False) -> bool:
        """Keep more text (or thinking, which counts the same against the caps);
        False (and the text trimmed to fit) once a cap is reached."""
        size = len(text.encode())
        if self.bytes + size > self.plan.cut_bytes:
            room = self.plan.cut_bytes - self.bytes
            text = text.encode()[:room].decode(errors="ignore")
            self._keep(text, len(text.encode()), reasoning)
            self.cut_note = bounds.REASONS["length"]
            return False
        self.deltas += 1
        if max(self.deltas, (self.chars + len(text)) // CHARS_PER_TOKEN) > self.plan.cut_tokens:
            self.deltas -= 1
            self.cut_note = bounds.REASONS[self.plan.cut_reason]
            return False
        self._keep(text, size, reasoning)
        return True

    def _keep(self, text: str, size: int, reasoning: bool):
        if not text:
            return
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        if reasoning:
            self.thinking_since = self.thinking_since or time.monotonic()
            self.thought.append(text)
            self.new_thought.append(text)
        else:
            if self.thinking_since is not None and self.thinking_seconds is None:
                self.thinking_seconds = time.monotonic() - self.thinking_since
                self.label = "Thought for " + thought_label_seconds(self.thinking_seconds)
            self.answer.append(text)
            self.answer_changed = True
        self.chars += len(text)
        self.bytes += size
        self.wakeup.set()

    def answer_was_reasoning(self):
        """A lone `</think>`: everything so far was thinking. Move it; the page follows."""
        self.thought += self.answer
        self.answer.clear()
        self.new_thought.clear()
        self.thinking_since = self.thinking_since or self.first_token_at
        self.live = LiveMarkdown(settings.WS_FRAME_BYTES - 512)
        self.reset = self.answer_changed = True
        self.wakeup.set()

    # --- reading the provider ----------------------------------------------
    async def pump(self):
        paced = False
        try:
            async with aclosing(client.stream(self.plan.endpoint, self.plan.request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta | ReasoningDelta):
                        if not self.take(event.text, isinstance(event, ReasoningDelta)):
                            break  # leaving the block closes the upstream connection
                        if not paced:  # the first token went out at once; the rest are
                            paced = True  # published once per interval: read them so
                            network.pace_reads(publishing.PACE.interval)
                    elif isinstance(event, AnswerWasReasoning):
                        self.answer_was_reasoning()
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

    def stop(self):
        """Stop the reply: the upstream connection closes; the text so far is kept."""
        self.stop_requested = True
        if self.pump_task is not None:
            self.pump_task.cancel()

    def fail(self):
        """A bug or an unexpected state on our side: the reply ends as failed, text kept."""
        self.failed = True
        self.status = Status.ERROR
        self.cut_note = ending.FAILED_NOTE

    # --- saving ----------------------------------------------------------------
    def save_due(self, now: float) -> bool:
        """Changed since the last save, or quiet so long that the row needs a heartbeat."""
        heartbeat = settings.STREAM_STALE_SECONDS / 3
        return self.chars != self.saved_chars or now - self.last_save >= heartbeat


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
    pump = job.pump_task = asyncio.create_task(job.pump())
    publisher = asyncio.create_task(job.publish_loop())
    try:
        await asyncio.shield(pump)
    except asyncio.CancelledError:
        pump.cancel()  # this process is shutting down: keep the text as interrupted
        job.status = Status.INTERRUPTED
    finally:
        job.wake()
        await asyncio.wait([publisher], timeout=5)  # the last delta goes out before the end
        publisher.cancel()
        await ending.finish(job)
        await asyncio.wait([publisher], timeout=2)


def start(plan: Plan, shown: bool = True) -> Job:
    """Run the reply in the background, outliving the request or socket that asked for it.

    With `shown` False its deltas wait until the caller, once the reply's turns are
    out to every tab, calls `job.shown.set()`; the upstream request goes out at once.

    The task gets a fresh context: Django runs each request inside asgiref's
    ThreadSensitiveContext, and a task that inherited it could not reach the
    database once the request that started it had finished.
    """
    job = Job(plan)
    if shown:
        job.shown.set()
    JOBS[plan.message_id] = job
    loop = asyncio.get_running_loop()
    job.task = loop.create_task(run(job), context=contextvars.Context())
    job.task.add_done_callback(_log_crash)
    return job


async def stop(message_id: int):
    """Stop a reply: at once if its job runs in this process, else through its group."""
    job = JOBS.get(message_id)
    if job is not None:
        job.stop()
    else:
        await events.stop_job(message_id)


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
