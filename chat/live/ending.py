"""How a reply ends: its final row and ledger values, saved come what may, then announced.

Whatever happened to the stream, the text that arrived is saved. The database
may be away for a moment (retried with back-off, the text waits in memory); if
the final values themselves cannot be computed or saved, the reply is saved as
failed with its text. Then every tab is sent the finished message.
"""

import asyncio
import functools
import json
import logging
import time
from contextlib import suppress
from decimal import Decimal

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from chat import rows
from chat.db import db_async
from chat.governance import bounds
from chat.live import events, metrics
from chat.models import Message, UsageRecord

log = logging.getLogger(__name__)
replies_log = logging.getLogger("chat.replies")
Status = Message.Status
FINAL_SAVE_ATTEMPTS = 8
FAILED_NOTE = "The reply failed on the server; the text so far is kept. Try Regenerate."
ALL_THINKING_NOTE = (
    "The model spent its whole reply budget thinking and gave no answer. Raise Max tokens "
    "in Settings, or lower its thinking, and regenerate."
)
NO_ANSWER_NOTE = "The model finished thinking without writing an answer. Try Regenerate."


def final_fields(job) -> dict:
    """The reply's final row: text, status, tokens (reported or estimated), cost, timings."""
    text = job.text()
    ended = time.monotonic()
    prompt, completion = job.usage.prompt_tokens, job.usage.completion_tokens
    estimated = prompt is None or completion is None
    if job.first_token_at is None and job.status == Status.ERROR and estimated:
        prompt = completion = 0  # failed before the backend produced anything: free
        estimated = False
    if prompt is None:
        prompt = job.plan.prompt_estimate
    if completion is None:
        completion = job.tokens_estimate()
    fields = {
        "content": text,
        "reasoning": job.reasoning_text(),
        "reasoning_seconds": _thinking_seconds(job, ended),
        "status": job.status,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "tokens_estimated": estimated,
        "cost": _cost(job, prompt, completion),
        "finish_reason": "length" if job.cut_note else job.finish,
        "updated": timezone.now(),
    }
    if job.first_token_at is not None:
        fields["ttft_ms"] = min(round((job.first_token_at - job.started) * 1000), 2**31 - 1)
        streaming_time = ended - job.first_token_at
        if streaming_time > 0 and completion > 1:
            fields["tokens_per_second"] = round((completion - 1) / streaming_time, 1)
    if job.error is not None:
        fields["error_kind"] = job.error.kind
        fields["error_message"] = job.error.message[:300]
    elif job.cut_note:
        fields["error_message"] = job.cut_note
        if job.failed:
            fields["error_kind"] = "internal"
    if fields["reasoning"] and not text.strip() and job.status != Status.ERROR:
        # An empty bubble would look like a bug: say where the reply went.
        budget_spent = job.cut_note or job.finish == "length"
        fields["error_message"] = ALL_THINKING_NOTE if budget_spent else NO_ANSWER_NOTE
    return fields


def _thinking_seconds(job, ended: float) -> float | None:
    if job.thinking_since is None:
        return None
    return job.thinking_seconds if job.thinking_seconds is not None else ended - job.thinking_since


def ledger_fields(job, fields: dict) -> dict:
    """The ledger row's final numbers, from the message's."""
    if job.usage.cost is not None:
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
        "duration_ms": round((time.monotonic() - job.started) * 1000),
        "status": fields["status"],
    }


def _cost(job, prompt: int, completion: int) -> Decimal | None:
    return bounds.spent(job.usage.cost, job.plan.price_in, job.plan.price_out, prompt, completion)


def fallback_fields(job) -> tuple[dict, dict]:
    """The plainest honest ending: failed, with its text and an estimate of its tokens."""
    return (
        {"content": job.text(), "reasoning": job.reasoning_text(), "status": Status.ERROR,
         "error_kind": "internal",
         "error_message": FAILED_NOTE, "updated": timezone.now()},
        {"status": Status.ERROR, "completion_tokens": job.tokens_estimate(),
         "tokens_estimated": True},
    )  # fmt: skip


def fresh_connection_on_failure(function):
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


def with_earlier_part(resume, fields: dict) -> dict:
    """A continued reply's totals: its earlier part's tokens and cost plus this one's
    (the ledger row counts only this generation)."""
    if resume is None:
        return fields
    totals = dict(fields)
    totals["completion_tokens"] = (fields.get("completion_tokens") or 0) + resume.completion_tokens
    if resume.cost is not None and fields.get("cost") is not None:
        totals["cost"] = fields["cost"] + resume.cost
    if totals.get("reasoning_seconds") is None:
        totals["reasoning_seconds"] = resume.reasoning_seconds
    return totals


@db_async
@fresh_connection_on_failure
def save_final(plan, fields: dict, ledger: dict) -> Message | None:
    """Save how the reply ended, and read it back as saved (None if it was deleted
    meanwhile), in one trip to the database thread. The page waits for the final
    frame this makes, so on SQLite it queues with the sends, not behind them."""
    with transaction.atomic():
        rows.update_where(
            Message, with_earlier_part(plan.resume, fields), "id = %s", [plan.message_id]
        )
        if plan.ledger_id:
            rows.update_where(UsageRecord, ledger, "id = %s", [plan.ledger_id])
        else:
            rows.update_where(UsageRecord, ledger, "message_id = %s", [plan.message_id])
    return rows.one(Message, "id = %s", [plan.message_id])


def final_frames(message: Message, live=None, versions=None) -> list[str]:
    """The finished message's frames, drawn on the event loop (no query). Its Markdown
    comes from the job's live rendering (`live`), which already holds every block but
    the last: the same HTML as rendering the whole text again (tested), for a fraction
    of the work. A reply that cannot be drawn is sent as plain text."""
    message.versions = versions  # known when it started: no query for its siblings
    try:
        rendered = live.whole(message.content) if live is not None and message.content else None
        return events.message_frames(message, rendered=rendered)
    except Exception:
        log.exception("could not render reply %s; sending it as plain text", message.pk)
    try:
        return events.message_frames(message, plain=True)
    except Exception:
        log.exception("could not render reply %s even as plain text", message.pk)
        return []


def _values(job) -> tuple[dict, dict]:
    try:
        fields = final_fields(job)
        return fields, ledger_fields(job, fields)
    except Exception:
        log.exception("reply %s: could not compute its final numbers", job.message_id)
        job.fail()
        return fallback_fields(job)


async def _save(job, fields: dict, ledger: dict) -> tuple[bool, Message | None]:
    """Whether the ending was saved, and the message as saved (None: deleted meanwhile)."""
    for attempt in range(FINAL_SAVE_ATTEMPTS):
        try:
            return True, await save_final(job.plan, fields, ledger)
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
            fields, ledger = fallback_fields(job)
    log.error("reply %s could not be saved; it stays streaming until recovery", job.message_id)
    return False, None


def _report(job, fields: dict):
    """Metrics, and one log line per reply: ids, numbers, never the text."""
    metrics.REPLIES.labels(fields["status"]).inc()
    metrics.TOKENS.inc(fields.get("completion_tokens") or 0)
    if fields.get("ttft_ms") is not None:
        metrics.TTFT.observe(fields["ttft_ms"] / 1000)
    if job.error is not None:
        metrics.UPSTREAM_ERRORS.labels(job.error.kind, job.plan.provider_name).inc()
    line = {
        "reply": job.message_id, "user": job.plan.user_id,
        "conversation": str(job.plan.conversation_id), "model": job.plan.request.model,
        "provider": job.plan.provider_name, "status": fields["status"],
        "prompt_tokens": fields.get("prompt_tokens"),
        "completion_tokens": fields.get("completion_tokens"),
        "ttft_ms": fields.get("ttft_ms"),
        "duration_ms": round((time.monotonic() - job.started) * 1000),
    }  # fmt: skip
    replies_log.info(json.dumps(line))


async def finish(job):
    """Save the reply's ending, then show it on every tab."""
    fields, ledger = _values(job)
    _report(job, fields)
    saved, message = await _save(job, fields, ledger)
    if not saved or message is None:  # recovery will end it; or nobody is left to tell
        return
    frames = final_frames(message, job.live, job.plan.versions)
    if frames:
        await events.publish_done(job.plan.conversation_id, job.message_id, job.status, frames)
