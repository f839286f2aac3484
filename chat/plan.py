"""What a reply needs to run, read from the database before it starts.

Plain data: the commands in chat.turns build it inside their transaction, and
the generation job (chat.live.jobs) runs from it without touching the ORM.
"""

import uuid
from dataclasses import dataclass
from decimal import Decimal

from providers.base import ChatRequest, Endpoint


@dataclass(frozen=True)
class Resume:
    """A stopped reply being continued in place: what it holds already. The job
    starts from it; the message's totals add the continuation to it."""

    text: str
    reasoning: str = ""
    reasoning_seconds: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal | None = None


@dataclass(frozen=True)
class Plan:
    message_id: int
    user_id: int
    conversation_id: uuid.UUID
    provider_name: str
    endpoint: Endpoint
    request: ChatRequest
    price_in: Decimal | None = None  # per million tokens
    price_out: Decimal | None = None
    prompt_estimate: int = 0
    cut_tokens: int = 16_384  # see chat.governance.bounds: the reply is cut past these
    cut_bytes: int = 256 * 1024
    cut_reason: str = "length"
    title_for: tuple | None = None  # (first question, provisional title) of a new conversation
    ledger_id: int | None = None  # this generation's ledger row
    resume: Resume | None = None  # set when continuing a reply
    versions: object = None  # its "‹ 2 / 3 ›" (chat.tree.Versions) as it started, if any
