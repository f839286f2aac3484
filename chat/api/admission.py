"""The database side of an API request: the same checks as the web chat, then
its ledger row, and at the end that row's final numbers.

Model access (the owner's groups, narrowed by the key's own list), the
concurrency cap (chat replies and API requests together), the rate, token and
cost quotas and the output bounds are chat.governance's, unchanged. The ledger
row is created before the upstream call, holding the most the request may use,
exactly as a chat reply's is, and is marked as API use with its key.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils.text import slugify

from chat import context
from chat.api.request import ApiCall
from chat.governance import bounds, quotas
from chat.models import ApiKey, Message, Preference, UsageRecord
from providers import client
from providers.base import ChatRequest, Endpoint
from providers.models import Model


class ModelNotFound(Exception):
    """404: the key may not use this model, or there is none by that name."""


class TooMany(Exception):
    """429: a quota or the concurrency cap; Retry-After says when to try again."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ContextTooLong(Exception):
    """400: the messages alone do not fit the model's context window."""


@dataclass(frozen=True)
class ApiPlan:
    """What the request needs to run, as plain data (no ORM off this module)."""

    ledger_id: int
    model_id: str  # as /v1/models names it
    endpoint: Endpoint
    request: ChatRequest
    prompt_estimate: int
    cut_tokens: int
    cut_bytes: int
    price_in: Decimal | None
    price_out: Decimal | None


def api_id(model: Model) -> str:
    """How the API names a model: its provider, then the backend's own id."""
    return f"{slugify(model.provider.name) or 'provider'}/{model.remote_id}"


def models_for(key: ApiKey) -> list[Model]:
    """Exactly the models this key may use: its owner's, narrowed by the key's list."""
    available = Model.objects.available_to(key.user).select_related("provider")
    chosen = list(key.allowed_models.values_list("pk", flat=True))
    if chosen:
        available = available.filter(pk__in=chosen)
    return sorted(available, key=api_id)


def _model(key: ApiKey, name: str) -> Model:
    for model in models_for(key):
        if name in (api_id(model), model.remote_id):
            return model
    raise ModelNotFound(f"The model {name!r} does not exist or this key may not use it.")


def _prompt_tokens(call: ApiCall) -> int:
    return sum(context.estimate_tokens(m["content"]) for m in call.messages)


def _bounds(model: Model, call: ApiCall, allowance) -> tuple[int, bounds.Bounds]:
    prompt = _prompt_tokens(call)
    window = model.context_window or settings.DEFAULT_CONTEXT_WINDOW
    if prompt >= window:
        raise ContextTooLong(
            f"The messages are about {prompt:,} tokens; this model's context window is "
            f"{window:,}. Send fewer or shorter messages."
        )
    try:
        limits = bounds.decide(
            wanted=call.max_tokens, model=model, context_left=window - prompt,
            prompt_tokens=prompt, allowance=allowance,
        )  # fmt: skip
    except bounds.NoRoom as no_room:
        raise TooMany(quotas.no_room_message(str(no_room)), 3600) from None
    return prompt, limits


@transaction.atomic
def admit(key: ApiKey, call: ApiCall) -> ApiPlan:
    model = _model(key, call.model)
    user = key.user
    Preference.objects.select_for_update().get_or_create(user=user)  # one start at a time
    try:
        allowance = quotas.check(user, quotas.in_flight(user.pk).count())
    except quotas.QuotaExceeded as exceeded:
        raise TooMany(str(exceeded), exceeded.retry_after) from None
    prompt, limits = _bounds(model, call, allowance)
    accepted = set(model.accepted_params or [])
    request = ChatRequest(
        model=model.remote_id,
        messages=call.messages,
        max_tokens=limits.max_tokens,
        params={name: value for name, value in call.params.items() if name in accepted},
        stop=call.stop,
        prompt_format=model.prompt_format,
        raw_prompt=model.raw_prompt,
        reasoning_control=model.reasoning,
        reasoning_effort=call.reasoning_effort or model.reasoning_effort,
    )
    row = UsageRecord.objects.create(
        user=user, api_key=key, model=model, model_name=model.display_name,
        provider_name=model.provider.name, status=Message.Status.STREAMING,
        purpose=UsageRecord.Purpose.API, prompt_tokens=prompt,
        completion_tokens=limits.cut_tokens, tokens_estimated=True,
        cost=limits.reserve_cost(prompt, model.price_input_per_mtok, model.price_output_per_mtok),
        cost_source=UsageRecord.CostSource.NONE,
    )  # fmt: skip
    return ApiPlan(
        ledger_id=row.pk, model_id=api_id(model),
        endpoint=client.endpoint_for(model.provider, model), request=request,
        prompt_estimate=prompt, cut_tokens=limits.cut_tokens,
        cut_bytes=limits.cut_bytes, price_in=model.price_input_per_mtok,
        price_out=model.price_output_per_mtok,
    )  # fmt: skip


def settle(plan: ApiPlan, outcome) -> None:
    """The ledger row's final numbers (chat.api.completions.Outcome)."""
    prompt, completion, estimated = outcome.tokens(plan)
    reported = outcome.usage.cost
    cost = bounds.spent(reported, plan.price_in, plan.price_out, prompt, completion)
    if reported is not None:
        source = UsageRecord.CostSource.PROVIDER
    else:
        source = UsageRecord.CostSource.NONE if cost is None else UsageRecord.CostSource.PRICES
    UsageRecord.objects.filter(pk=plan.ledger_id).update(
        prompt_tokens=prompt, completion_tokens=completion, tokens_estimated=estimated,
        cost=cost or 0, cost_source=source, status=outcome.status, latency_ms=outcome.ttft_ms(),
        duration_ms=outcome.duration_ms(),
    )  # fmt: skip
