"""Running an admitted API request: the provider's events as OpenAI's chat
completion, whole or as `chat.completion.chunk` events ending in `[DONE]`.

Every wire format comes through providers.client, so the `/completion` and
Workers AI backends are translated like any other, and thinking (in any of its
forms) goes out as `reasoning_content`. The caps, the total deadline and the
error kinds are the web chat's. A client that goes away cancels the request,
and leaving the provider's stream closes the upstream connection. Whatever
happens, the ledger row gets its final numbers.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from chat.api import admission
from chat.db import db_async
from chat.live.jobs import CHARS_PER_TOKEN
from chat.models import Message
from providers import client
from providers.base import Finish, ProviderError, ReasoningDelta, TextDelta, Usage

Status = Message.Status


@dataclass
class Outcome:
    """What came back so far, counted as a chat reply is."""

    started: float = field(default_factory=time.monotonic)
    first_at: float | None = None
    text: list = field(default_factory=list)
    thought: list = field(default_factory=list)
    deltas: int = 0
    chars: int = 0
    size: int = 0
    usage: Usage = field(default_factory=Usage)
    finish: str = "stop"
    status: str = Status.STREAMING

    def take(self, plan, event) -> str | None:
        """Keep a text or thinking event; the part within the caps, or None once cut."""
        piece = event.text.encode()[: max(0, plan.cut_bytes - self.size)].decode(errors="ignore")
        if not piece or self.deltas >= plan.cut_tokens:
            return None
        self.first_at = self.first_at or time.monotonic()
        self.deltas, self.chars, self.size = (
            self.deltas + 1,
            self.chars + len(piece),
            self.size + len(piece.encode()),
        )
        (self.thought if isinstance(event, ReasoningDelta) else self.text).append(piece)
        return piece

    def tokens(self, plan) -> tuple[int, int, bool]:
        """(prompt, completion, estimated): the backend's counts, or the chat's estimates
        (one token per event, or more if events carry long text)."""
        prompt, completion = self.usage.prompt_tokens, self.usage.completion_tokens
        estimated = prompt is None or completion is None
        prompt = plan.prompt_estimate if prompt is None else prompt
        if completion is None:
            completion = max(self.deltas, self.chars // CHARS_PER_TOKEN)
        return prompt, completion, estimated

    def ttft_ms(self) -> int | None:
        return None if self.first_at is None else round((self.first_at - self.started) * 1000)

    def duration_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)

    def usage_body(self, plan) -> dict:
        prompt, completion, _ = self.tokens(plan)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }


settle = db_async(admission.settle)


async def _settle_whatever_happens(plan, outcome: Outcome):
    """The final ledger numbers, shielded: a cancelled request still records them."""
    await asyncio.shield(settle(plan, outcome))


async def events(plan, outcome: Outcome) -> AsyncIterator:
    """The provider's events, with text and thinking cut to the caps (then it stops,
    which closes the upstream connection)."""
    async with aclosing(client.stream(plan.endpoint, plan.request)) as upstream:
        async for event in upstream:
            if isinstance(event, TextDelta | ReasoningDelta):
                if not event.text:
                    continue
                piece = outcome.take(plan, event)
                if piece is None:
                    outcome.finish = "length"
                    return
                yield type(event)(piece)
            elif isinstance(event, Usage):
                outcome.usage = event
            elif isinstance(event, Finish):
                outcome.finish = event.reason


def _ids() -> tuple[str, int]:
    return f"chatcmpl-{uuid.uuid4().hex}", int(time.time())


async def whole(plan) -> dict:
    """A non-streamed completion, with its usage."""
    outcome = Outcome()
    try:
        async with aclosing(events(plan, outcome)) as stream:
            async for _ in stream:
                pass
        outcome.status = Status.COMPLETE
    except ProviderError:
        outcome.status = Status.ERROR
        raise
    except asyncio.CancelledError:
        outcome.status = Status.STOPPED  # the client went away
        raise
    finally:
        await _settle_whatever_happens(plan, outcome)
    message = {"role": "assistant", "content": "".join(outcome.text)}
    if outcome.thought:
        message["reasoning_content"] = "".join(outcome.thought)
    completion_id, created = _ids()
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": plan.model_id,
        "choices": [{"index": 0, "message": message, "finish_reason": outcome.finish}],
        "usage": outcome.usage_body(plan),
    }


def _sse(payload) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class Streamed:
    """A streamed completion. `start()` waits for the first event, so that an upstream
    refusal (a bad key, a rate limit, a context overflow) is still an HTTP error;
    then `chunks()` is the response body."""

    def __init__(self, plan, include_usage: bool):
        self.plan, self.include_usage = plan, include_usage
        self.outcome = Outcome()
        self.stream = events(plan, self.outcome)
        self.first = None
        self.id, self.created = _ids()

    async def start(self):
        try:
            self.first = await anext(self.stream, None)
        except BaseException as error:
            await self._end(error)
            raise

    def _chunk(self, delta: dict, finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.plan.model_id, "choices": [choice],
        })  # fmt: skip

    def _piece(self, event) -> str:
        field_name = "reasoning_content" if isinstance(event, ReasoningDelta) else "content"
        return self._chunk({field_name: event.text})

    async def chunks(self) -> AsyncIterator[str]:
        error = None
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            if self.first is not None:
                yield self._piece(self.first)
                async for event in self.stream:
                    yield self._piece(event)
            yield self._chunk({}, self.outcome.finish)
            if self.include_usage:
                yield _sse({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.plan.model_id, "choices": [],
                    "usage": self.outcome.usage_body(self.plan),
                })  # fmt: skip
        except ProviderError as failure:
            error = failure
            yield _sse({"error": {"message": failure.message, "type": "upstream_error",
                                  "code": failure.kind}})  # fmt: skip
        except BaseException as gone:  # the client went away (cancelled), or a bug
            await self._end(gone)
            raise
        await self._end(error)
        yield "data: [DONE]\n\n"

    async def _end(self, error):
        if self.outcome.status != Status.STREAMING:
            return
        await self.stream.aclose()
        if error is None:
            self.outcome.status = Status.COMPLETE
        elif isinstance(error, ProviderError):
            self.outcome.status = Status.ERROR
        else:
            self.outcome.status = Status.STOPPED
        await _settle_whatever_happens(self.plan, self.outcome)
