"""The database side of each chat command: check, then create the turns.

Each public function runs in one transaction and either returns the Plan for a
generation job or raises Refused with a message for the user. Nothing is
stored when a check fails, so a refused message is never half-saved.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from chat import context
from chat.governance import bounds, quotas
from chat.live import metrics
from chat.models import Conversation, Message, Preference, UsageRecord
from chat.plan import Plan
from providers import client
from providers.base import ChatRequest
from providers.models import SAMPLING_PARAMS, Model

Status = Message.Status
MAX_ID = 2**63 - 1  # the largest id a database row can have


class Refused(Exception):
    """A command the user may not run now; the message says why and what to do."""


def current_user(user_id):
    """The account as it is now (rights, groups, staff), or None once it is deactivated."""
    return get_user_model().objects.filter(pk=user_id, is_active=True).first()


def owned_conversation(user, conversation_id) -> Conversation | None:
    return Conversation.objects.filter(pk=conversation_id, owner=user).first()


def streaming_ids(conversation_id) -> list[int]:
    return list(
        Message.objects.filter(conversation_id=conversation_id, status=Status.STREAMING)
        .order_by("id")
        .values_list("pk", flat=True)
    )


def as_id(value, refusal: str = "That message does not exist.") -> int:
    """A row id from a command or form: a positive integer that fits the database."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Refused(refusal)
    try:
        number = int(value)
    except ValueError:
        raise Refused(refusal) from None
    if not 0 < number <= MAX_ID:
        raise Refused(refusal)
    return number


def owned_message(conversation: Conversation, message_id) -> Message:
    message_id = as_id(message_id)
    message = Message.objects.filter(pk=message_id, conversation=conversation).first()
    if message is None:  # another user's id looks exactly like a missing one
        raise Refused("That message does not exist.")
    return message


def _clean_content(content) -> str:
    if not isinstance(content, str) or not content.strip():
        raise Refused("Type a message first.")
    if len(content) > settings.MAX_MESSAGE_CHARS:
        raise Refused(
            f"That message is {len(content):,} characters long; the limit is "
            f"{settings.MAX_MESSAGE_CHARS:,}. Shorten it or attach less text."
        )
    return content.strip()


def _pick_model(user, conversation: Conversation, model_id) -> Model:
    available = Model.objects.available_to(user).select_related("provider")
    if model_id not in (None, ""):
        refusal = "That model is not available to you. Pick another one."
        model = available.filter(pk=as_id(model_id, refusal)).first()
        if model is None:
            raise Refused(refusal)
        return model
    if conversation.model_id:
        model = available.filter(pk=conversation.model_id).first()
        if model is None:
            raise Refused(
                "This conversation's model is no longer available to you. Pick another one."
            )
        return model
    preference = Preference.objects.filter(user=user).first()
    model = available.filter(pk=getattr(preference, "last_model_id", None)).first()
    model = model or available.first()
    if model is None:
        raise Refused("No model is available yet. Ask an admin to enable one.")
    return model


def _admit(user, conversation: Conversation) -> tuple[Preference, quotas.Allowance]:
    """Serialise a user's starts, then refuse if this conversation is still being answered
    or a quota (concurrency included) is used up. One query finds every running reply."""
    preference, _ = Preference.objects.select_for_update().get_or_create(user=user)
    running = list(
        Message.objects.filter(conversation__owner=user, status=Status.STREAMING).values_list(
            "conversation_id", flat=True
        )
    )
    if conversation.pk in running:
        raise Refused("A reply is still being written here; stop it first.")
    try:
        return preference, quotas.check(user, len(running))
    except quotas.QuotaExceeded as exceeded:
        metrics.QUOTA_REFUSALS.inc()
        raise Refused(str(exceeded)) from None


def _sampling(conversation: Conversation, model: Model) -> tuple[dict, int | None]:
    """The conversation's settings, limited to what the model accepts, over its defaults."""
    chosen = conversation.settings or {}
    params = {}
    for name in model.accepted_params or []:
        if name in SAMPLING_PARAMS:
            value = chosen.get(name, (model.param_defaults or {}).get(name))
            if value is not None:
                params[name] = value
    return params, chosen.get("max_tokens")


def _history(conversation: Conversation, before_id: int | None = None) -> list[dict]:
    messages = Message.objects.filter(conversation=conversation).exclude(content="")
    if before_id is not None:
        messages = messages.filter(pk__lt=before_id)
    return [{"role": m.role, "content": m.content} for m in messages.order_by("id")]


def _bounds(conversation, model, prompt, allowance) -> bounds.Bounds:
    window = model.context_window or settings.DEFAULT_CONTEXT_WINDOW
    try:
        return bounds.decide(
            wanted=_sampling(conversation, model)[1],
            model=model,
            context_left=window - prompt.estimated_tokens,
            prompt_tokens=prompt.estimated_tokens,
            allowance=allowance,
        )
    except bounds.NoRoom as no_room:
        metrics.QUOTA_REFUSALS.inc()
        raise Refused(quotas.no_room_message(str(no_room))) from None


def _plan(conversation, model, assistant: Message, prompt, limits, title_for=None) -> Plan:
    params, _ = _sampling(conversation, model)
    request = ChatRequest(
        model=model.remote_id,
        messages=prompt.messages,
        max_tokens=limits.max_tokens,
        params=params,
        prompt_format=model.prompt_format,
        raw_prompt=model.raw_prompt,
        reasoning_control=model.reasoning,
        reasoning_effort=(conversation.settings or {}).get("reasoning_effort")
        or model.reasoning_effort,
    )
    return Plan(
        message_id=assistant.pk,
        user_id=conversation.owner_id,
        conversation_id=conversation.pk,
        provider_name=model.provider.name,
        endpoint=client.endpoint_for(model.provider, model),
        request=request,
        price_in=model.price_input_per_mtok,
        price_out=model.price_output_per_mtok,
        prompt_estimate=prompt.estimated_tokens,
        cut_tokens=limits.cut_tokens,
        cut_bytes=limits.cut_bytes,
        cut_reason=limits.cut_reason,
        title_for=title_for,
    )


def _build_prompt(conversation, model, history):
    _, max_tokens = _sampling(conversation, model)
    try:
        return context.build(model, conversation.system_prompt, history, max_tokens)
    except context.ContextTooLongError as error:
        raise Refused(str(error)) from None


def _new_reply(conversation, model, prompt, limits: bounds.Bounds) -> Message:
    """The reply's row and its ledger row, both from the first moment.

    Until the reply ends, its ledger row holds the most it may use (prompt plus
    the cut), so replies running side by side cannot spend the same quota twice.
    """
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Status.STREAMING,
        model=model,
        model_name=model.display_name,
        left_out=prompt.left_out,
    )
    UsageRecord.objects.create(
        user_id=conversation.owner_id,
        message=reply,
        model=model,
        model_name=model.display_name,
        provider_name=model.provider.name,
        status=Status.STREAMING,
        prompt_tokens=prompt.estimated_tokens,
        completion_tokens=limits.cut_tokens,
        tokens_estimated=True,
        cost=limits.reserve_cost(
            prompt.estimated_tokens, model.price_input_per_mtok, model.price_output_per_mtok
        ),
        cost_source=UsageRecord.CostSource.NONE,
    )
    return reply


def _touch(conversation: Conversation, model: Model, preference: Preference, first_text: str = ""):
    conversation.model = model
    fields = ["model", "updated"]
    if first_text and not conversation.title:
        conversation.title = first_words(first_text)
        fields.append("title")
    conversation.save(update_fields=fields)
    if preference.last_model_id != model.pk:
        preference.last_model = model
        preference.save(update_fields=["last_model"])


def first_words(text: str, limit: int = 60) -> str:
    words = " ".join(text.split())
    return words if len(words) <= limit else words[: limit - 1].rsplit(" ", 1)[0] + "…"


@transaction.atomic
def send(user, conversation_id, content, model_id=None) -> tuple[list[Message], Plan]:
    conversation = Conversation.objects.select_for_update().get(pk=conversation_id, owner=user)
    content = _clean_content(content)
    model = _pick_model(user, conversation, model_id)
    preference, allowance = _admit(user, conversation)
    history = [*_history(conversation), {"role": "user", "content": content}]
    prompt = _build_prompt(conversation, model, history)
    limits = _bounds(conversation, model, prompt, allowance)
    question = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=content
    )
    reply = _new_reply(conversation, model, prompt, limits)
    first = not conversation.title
    _touch(conversation, model, preference, content)
    title_for = (content, conversation.title) if first else None
    return [question, reply], _plan(conversation, model, reply, prompt, limits, title_for)


@transaction.atomic
def regenerate(user, conversation_id, model_id=None) -> tuple[list[int], Message, Plan]:
    """Replace the last reply with a new one. Returns (removed ids, new reply, plan)."""
    conversation = Conversation.objects.select_for_update().get(pk=conversation_id, owner=user)
    last = conversation.messages.order_by("-id").first()
    if last is None:
        raise Refused("There is nothing to regenerate yet.")
    removed = [last.pk] if last.role == Message.Role.ASSISTANT else []
    model = _pick_model(user, conversation, model_id)
    preference, allowance = _admit(user, conversation)
    history = _history(conversation, before_id=last.pk if removed else None)
    if not history or history[-1]["role"] != "user":
        raise Refused("There is no question to answer again.")
    prompt = _build_prompt(conversation, model, history)
    limits = _bounds(conversation, model, prompt, allowance)
    Message.objects.filter(pk__in=removed).delete()
    reply = _new_reply(conversation, model, prompt, limits)
    _touch(conversation, model, preference)
    return removed, reply, _plan(conversation, model, reply, prompt, limits)


@transaction.atomic
def edit(user, conversation_id, message_id, content) -> tuple[list[int], list[Message], Plan]:
    """Change a question and answer it again; the turns after it are replaced."""
    conversation = Conversation.objects.select_for_update().get(pk=conversation_id, owner=user)
    question = owned_message(conversation, message_id)
    if question.role != Message.Role.USER:
        raise Refused("Only your own messages can be edited.")
    content = _clean_content(content)
    model = _pick_model(user, conversation, None)
    preference, allowance = _admit(user, conversation)
    history = [*_history(conversation, before_id=question.pk), {"role": "user", "content": content}]
    prompt = _build_prompt(conversation, model, history)
    limits = _bounds(conversation, model, prompt, allowance)
    later = conversation.messages.filter(pk__gt=question.pk)
    removed = list(later.values_list("pk", flat=True))
    later.delete()
    question.content = content
    question.save(update_fields=["content"])
    reply = _new_reply(conversation, model, prompt, limits)
    _touch(conversation, model, preference)
    return removed, [question, reply], _plan(conversation, model, reply, prompt, limits)


def stoppable(user, conversation_id, message_id) -> int:
    conversation = Conversation.objects.get(pk=conversation_id, owner=user)
    message = owned_message(conversation, message_id)
    if message.status != Status.STREAMING:
        raise Refused("That reply has already finished.")
    return message.pk


def user_streaming_ids(user_id) -> list[int]:
    return list(
        Message.objects.filter(conversation__owner_id=user_id, status=Status.STREAMING).values_list(
            "pk", flat=True
        )
    )


@transaction.atomic
def start_conversation(user, content, model_id=None) -> tuple[Conversation, list[Message], Plan]:
    """A new conversation with its first question; nothing is kept if the send is refused."""
    conversation = Conversation.objects.create(owner=user)
    messages, plan = send(user, conversation.pk, content, model_id)
    return conversation, messages, plan


def sync_state(conversation_id, after: int, streaming: list[int]):
    """What a page that shows messages up to `after` (some of them `streaming`) is missing.

    Returns (messages it shows as streaming that have since finished, messages newer
    than `after`, ids of both kinds still streaming). Ids from elsewhere are ignored:
    only this conversation's rows match.
    """
    mine = Message.objects.filter(conversation_id=conversation_id)
    finished = list(mine.filter(pk__in=streaming).exclude(status=Status.STREAMING))
    newer = list(mine.filter(pk__gt=after).order_by("id")[:200])
    still = mine.filter(pk__in=[*streaming, *(m.pk for m in newer)], status=Status.STREAMING)
    return finished, newer, list(still.values_list("pk", flat=True))
