"""The database side of each chat command: check, then create the turns.

Each public function runs in one transaction and either returns the Plan for a
generation job or raises Refused with a message for the user. Nothing is
stored when a check fails, so a refused message is never half-saved.
"""

from django.conf import settings
from django.db import transaction

from chat import context, quotas
from chat.generation import Plan
from chat.models import Conversation, Message, Preference, UsageRecord
from providers import client
from providers.base import ChatRequest
from providers.models import SAMPLING_PARAMS, Model

Status = Message.Status


class Refused(Exception):
    """A command the user may not run now; the message says why and what to do."""


def owned_conversation(user, conversation_id) -> Conversation | None:
    return Conversation.objects.filter(pk=conversation_id, owner=user).first()


def streaming_ids(conversation_id) -> list[int]:
    return list(
        Message.objects.filter(conversation_id=conversation_id, status=Status.STREAMING)
        .order_by("id")
        .values_list("pk", flat=True)
    )


def owned_message(conversation: Conversation, message_id) -> Message:
    try:
        message_id = int(message_id)
    except (TypeError, ValueError):
        raise Refused("That message does not exist.") from None
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
        try:
            model = available.filter(pk=int(model_id)).first()
        except (TypeError, ValueError):
            model = None
        if model is None:
            raise Refused("That model is not available to you. Pick another one.")
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


def _lock_user_generations(user):
    """Serialise a user's starts, then enforce their quotas (concurrency included)."""
    preference, _ = Preference.objects.get_or_create(user=user)
    Preference.objects.select_for_update().filter(pk=preference.pk).first()
    running = Message.objects.filter(conversation__owner=user, status=Status.STREAMING).count()
    try:
        quotas.check(user, running)
    except quotas.QuotaExceeded as exceeded:
        raise Refused(str(exceeded)) from None
    return preference


def _check_idle(conversation: Conversation):
    if Message.objects.filter(conversation=conversation, status=Status.STREAMING).exists():
        raise Refused("A reply is still being written here; stop it first.")


def _sampling(conversation: Conversation, model: Model) -> tuple[dict, int | None]:
    """The conversation's settings, limited to what the model accepts, over its defaults."""
    chosen = conversation.settings or {}
    params = {}
    for name in model.accepted_params or []:
        if name in SAMPLING_PARAMS:
            value = chosen.get(name, (model.param_defaults or {}).get(name))
            if value is not None:
                params[name] = value
    max_tokens = chosen.get("max_tokens") or model.default_max_tokens
    if max_tokens and model.max_output_tokens:
        max_tokens = min(max_tokens, model.max_output_tokens)
    return params, max_tokens


def _history(conversation: Conversation, before_id: int | None = None) -> list[dict]:
    messages = Message.objects.filter(conversation=conversation).exclude(content="")
    if before_id is not None:
        messages = messages.filter(pk__lt=before_id)
    return [{"role": m.role, "content": m.content} for m in messages.order_by("id")]


def _plan(conversation, model, assistant: Message, prompt, title_for=None) -> Plan:
    params, max_tokens = _sampling(conversation, model)
    request = ChatRequest(
        model=model.remote_id,
        messages=prompt.messages,
        max_tokens=max_tokens,
        params=params,
        prompt_format=model.prompt_format,
        raw_prompt=model.raw_prompt,
    )
    return Plan(
        message_id=assistant.pk,
        group=conversation.group,
        endpoint=client.endpoint_for(model.provider, model),
        request=request,
        price_in=model.price_input_per_mtok,
        price_out=model.price_output_per_mtok,
        prompt_estimate=prompt.estimated_tokens,
        title_for=title_for,
    )


def _build_prompt(conversation, model, history):
    _, max_tokens = _sampling(conversation, model)
    try:
        return context.build(model, conversation.system_prompt, history, max_tokens)
    except context.ContextTooLongError as error:
        raise Refused(str(error)) from None


def _new_reply(conversation, model, prompt) -> Message:
    """The reply's row and its ledger row, both from the first moment."""
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
    _check_idle(conversation)
    preference = _lock_user_generations(user)
    history = [*_history(conversation), {"role": "user", "content": content}]
    prompt = _build_prompt(conversation, model, history)
    question = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=content
    )
    reply = _new_reply(conversation, model, prompt)
    first = not conversation.title
    _touch(conversation, model, preference, content)
    title_for = (conversation.pk, content, conversation.title) if first else None
    return [question, reply], _plan(conversation, model, reply, prompt, title_for)


@transaction.atomic
def regenerate(user, conversation_id, model_id=None) -> tuple[list[int], Message, Plan]:
    """Replace the last reply with a new one. Returns (removed ids, new reply, plan)."""
    conversation = Conversation.objects.select_for_update().get(pk=conversation_id, owner=user)
    _check_idle(conversation)
    last = conversation.messages.order_by("-id").first()
    if last is None:
        raise Refused("There is nothing to regenerate yet.")
    removed = [last.pk] if last.role == Message.Role.ASSISTANT else []
    model = _pick_model(user, conversation, model_id)
    preference = _lock_user_generations(user)
    history = _history(conversation, before_id=last.pk if removed else None)
    if not history or history[-1]["role"] != "user":
        raise Refused("There is no question to answer again.")
    prompt = _build_prompt(conversation, model, history)
    Message.objects.filter(pk__in=removed).delete()
    reply = _new_reply(conversation, model, prompt)
    _touch(conversation, model, preference)
    return removed, reply, _plan(conversation, model, reply, prompt)


@transaction.atomic
def edit(user, conversation_id, message_id, content) -> tuple[list[int], list[Message], Plan]:
    """Change a question and answer it again; the turns after it are replaced."""
    conversation = Conversation.objects.select_for_update().get(pk=conversation_id, owner=user)
    question = owned_message(conversation, message_id)
    if question.role != Message.Role.USER:
        raise Refused("Only your own messages can be edited.")
    content = _clean_content(content)
    _check_idle(conversation)
    model = _pick_model(user, conversation, None)
    preference = _lock_user_generations(user)
    history = [*_history(conversation, before_id=question.pk), {"role": "user", "content": content}]
    prompt = _build_prompt(conversation, model, history)
    later = conversation.messages.filter(pk__gt=question.pk)
    removed = list(later.values_list("pk", flat=True))
    later.delete()
    question.content = content
    question.save(update_fields=["content"])
    reply = _new_reply(conversation, model, prompt)
    _touch(conversation, model, preference)
    return removed, [question, reply], _plan(conversation, model, reply, prompt)


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


def sync_state(conversation_id, after, streaming) -> tuple[list[Message], list[Message]]:
    """What a page that shows messages up to `after` (some of them `streaming`) is missing.

    Returns (messages it shows as streaming that have since finished, messages newer
    than `after`). Ids from elsewhere are ignored: only this conversation's rows match.
    """
    try:
        after = int(after or 0)
        streaming = [int(i) for i in (streaming or [])][:100]
    except (TypeError, ValueError):
        raise Refused("That was not a valid command.") from None
    mine = Message.objects.filter(conversation_id=conversation_id)
    finished = list(mine.filter(pk__in=streaming).exclude(status=Status.STREAMING))
    newer = list(mine.filter(pk__gt=after).order_by("id")[:200])
    return finished, newer


def is_streaming(conversation_id, message_id) -> bool:
    return Message.objects.filter(
        pk=message_id, conversation_id=conversation_id, status=Status.STREAMING
    ).exists()
