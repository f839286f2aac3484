"""Name a new conversation by asking a model for a short title.

Runs in the background after the first reply completes, never on the token
path, and at most settings.MAX_TITLE_CALLS at a time per process: under load,
titles wait their turn instead of adding upstream calls. Admins choose in Site
settings whether titles come from the conversation's own model, from a chosen
(cheap) model, or not at all. A title call is metered like a reply: it checks
the user's quota first, writes a ledger row marked as a title, and fails free
when the backend produces nothing. If the model fails or answers nonsense, the
first words of the first message (set when it was sent) stay as the title. A
title the user already changed is never overwritten.
"""

import asyncio
import logging
import weakref
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from chat.db import db_background
from chat.governance import quotas
from chat.live import events
from chat.models import Conversation, Message, SiteSettings, UsageRecord
from providers import client
from providers.base import ChatRequest, Endpoint, ProviderError

log = logging.getLogger(__name__)
MAX_TITLE = 60
TITLE_TOKENS = 24
INSTRUCTION = (
    "Write a title of at most six words for a conversation that starts with the message "
    "below. Answer with the title only, no quotes.\n\nMessage:\n"
)
_MARKERS = "\"'`*#_>~-–—•+ "


def clean(raw: str) -> str:
    """The first line of the model's answer, without quotes, Markdown or list markers."""
    line = next((line for line in raw.strip().splitlines() if line.strip()), "")
    line = line.strip().lstrip(_MARKERS)
    line = line.removeprefix("Title:").removeprefix("title:").strip(_MARKERS + ".")
    line = line.lstrip("0123456789").lstrip(".) ") if line[:1].isdigit() else line
    for mark in ("**", "__", "`"):
        line = line.replace(mark, "")
    return line[:MAX_TITLE].strip()


@dataclass(frozen=True)
class TitleCall:
    endpoint: Endpoint
    request: ChatRequest
    ledger_id: int


def _model_for(message: Message):
    site = SiteSettings.load()
    if site.titles == SiteSettings.Titles.OFF:
        return None
    chosen = site.title_model
    usable = chosen is not None and chosen.enabled and chosen.provider.usable
    if site.titles == SiteSettings.Titles.CHOSEN_MODEL and usable:
        return chosen
    return message.model


@db_background
def _prepare(message_id: int, question: str) -> TitleCall | None:
    """Pick the model, check the quota, and open the ledger row; None when no title is due."""
    message = Message.objects.select_related("conversation__owner", "model__provider").get(
        pk=message_id
    )
    model = _model_for(message)
    user = message.conversation.owner
    if model is None or not user.is_active:
        return None
    request = ChatRequest(
        model=model.remote_id,
        messages=[{"role": "user", "content": INSTRUCTION + question[:2000]}],
        max_tokens=TITLE_TOKENS,
    )
    prompt_tokens = len(request.messages[0]["content"]) // 3 + 8
    try:
        allowance = quotas.check(user, running=0)
    except quotas.QuotaExceeded:
        return None
    if allowance.tokens_left is not None and allowance.tokens_left < prompt_tokens + TITLE_TOKENS:
        return None
    ledger = UsageRecord.objects.create(
        user=user,
        model=model,
        model_name=model.display_name,
        provider_name=model.provider.name,
        purpose=UsageRecord.Purpose.TITLE,
        status=Message.Status.STREAMING,
        prompt_tokens=prompt_tokens,
        completion_tokens=TITLE_TOKENS,
        tokens_estimated=True,
        cost_source=UsageRecord.CostSource.NONE,
    )
    return TitleCall(client.endpoint_for(model.provider, model), request, ledger.pk)


@db_background
def _meter(ledger_id: int, completion, started: float):
    """Finish the title's ledger row: what the backend reported, or an estimate; free on failure."""
    record = UsageRecord.objects.select_related("model").get(pk=ledger_id)
    fields = {"duration_ms": round((timezone.now().timestamp() - started) * 1000)}
    if completion is None:
        failed = {"prompt_tokens": 0, "completion_tokens": 0, "tokens_estimated": False}
        fields.update(status=Message.Status.ERROR, **failed)
    else:
        usage = completion.usage
        prompt = usage.prompt_tokens if usage.prompt_tokens is not None else record.prompt_tokens
        reply = usage.completion_tokens
        fields.update(
            status=Message.Status.COMPLETE,
            prompt_tokens=prompt,
            completion_tokens=reply if reply is not None else max(1, len(completion.text) // 4),
            tokens_estimated=usage.prompt_tokens is None or reply is None,
        )
        fields.update(_cost(record.model, usage, prompt, fields["completion_tokens"]))
    UsageRecord.objects.filter(pk=ledger_id).update(**fields)


def _cost(model, usage, prompt: int, completion: int) -> dict:
    if usage.cost is not None:
        return {"cost": usage.cost, "cost_source": UsageRecord.CostSource.PROVIDER}
    price_in, price_out = (
        (model.price_input_per_mtok, model.price_output_per_mtok) if model else (None, None)
    )
    if price_in is None and price_out is None:
        return {}
    spent = (price_in or 0) * prompt + (price_out or 0) * completion
    return {"cost": Decimal(spent) / 1_000_000, "cost_source": UsageRecord.CostSource.PRICES}


@db_background
def _save(conversation_id, provisional: str, title: str) -> list[str]:
    updated = Conversation.objects.filter(pk=conversation_id, title=provisional).update(title=title)
    if not updated:
        return []  # the person renamed it meanwhile
    return events.title_frames(Conversation.objects.get(pk=conversation_id))


_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = (
    weakref.WeakKeyDictionary()
)


def _slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    if loop not in _slots:
        _slots[loop] = asyncio.Semaphore(settings.MAX_TITLE_CALLS)
    return _slots[loop]


async def generate(plan, question: str, provisional: str):
    async with _slot():
        await _generate(plan, question, provisional)


async def _generate(plan, question: str, provisional: str):
    call = await _prepare(plan.message_id, question)
    if call is None:
        return
    started = timezone.now().timestamp()
    try:
        completion = await client.complete(call.endpoint, call.request)
    except ProviderError as error:
        log.info("no title for %s: %s", plan.conversation_id, error)
        completion = None
    await _meter(call.ledger_id, completion, started)
    title = clean(completion.text) if completion else ""
    if len(title) < 2:
        return
    frames = await _save(plan.conversation_id, provisional, title)
    if frames:
        await events.publish_thread(plan.conversation_id, frames)
