"""The database side of each command that starts a generation: check, then write.

Send, edit, regenerate and continue. A new turn goes under the branch it
answers (chat.tree); edits and regenerations add versions and never delete.

Each public function runs in one transaction and either returns the Plan for a
generation job or raises Refused with a message for the user. Nothing is
stored when a check fails, so a refused message is never half-saved.
"""

from django.conf import settings
from django.db import transaction

from chat import context, rows, thread
from chat.governance import access, bounds, quotas
from chat.live import metrics
from chat.models import Conversation, Message, Preference, UsageRecord
from chat.ownership import (
    Refused,
    as_id,
    lock_preferences,
    locked_conversation,
    owned_message,
)
from chat.plan import Plan, Resume
from chat.tree import Tree
from providers import client
from providers.base import ChatRequest
from providers.models import SAMPLING_PARAMS, Model

Status = Message.Status
__all__ = ["Refused", "continue_reply", "edit", "regenerate", "send", "start_conversation"]


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
    if model_id not in (None, ""):
        refusal = "That model is not available to you. Pick another one."
        model = access.model_for(user, as_id(model_id, refusal))
        if model is None:
            raise Refused(refusal)
        return model
    if conversation.model_id:
        model = access.model_for(user, conversation.model_id)
        if model is None:
            raise Refused(
                "This conversation's model is no longer available to you. Pick another one."
            )
        return model
    available = Model.objects.available_to(user).select_related("provider")
    preference = Preference.objects.filter(user=user).first()
    model = available.filter(pk=getattr(preference, "last_model_id", None)).first()
    model = model or available.first()
    if model is None:
        raise Refused("No model is available yet. Ask an admin to enable one.")
    return model


def _admit(user, model, limits, own: int, busy=()) -> quotas.Allowance:
    """Serialise a user's starts from here to the commit (remembering `model` as their
    last), then refuse if a reply this one builds on (`busy`) is still being written, or
    a quota (concurrency included) is used up. One query finds every running reply;
    `own` (this start's) is not counted. A refusal rolls the model back too."""
    lock_preferences(user, model)
    running = quotas.in_flight(user.pk)
    if any(pk in running.replies for pk in busy):
        raise Refused("A reply is still being written here; stop it first.")
    try:
        return quotas.check(user, running.count(leaving_out=own), limits)
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


def _plan(conversation, model, reply: Message, prompt, limits, **extra) -> Plan:
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
        continues=extra.get("resume") is not None,
        continue_mode=model.continue_mode,
    )
    return Plan(
        message_id=reply.pk,
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
        ledger_id=reply.ledger_id,
        **extra,
    )


def _build_prompt(conversation, model, history):
    _, max_tokens = _sampling(conversation, model)
    try:
        return context.build(model, conversation.system_prompt, history, max_tokens)
    except context.ContextTooLongError as error:
        raise Refused(str(error)) from None


def _ledger_row(reply: Message, model, prompt, limits: bounds.Bounds, purpose) -> UsageRecord:
    """A generation's ledger row, from its first moment: until it ends, the row holds the
    most it may use (prompt plus the cut), so replies side by side cannot spend the same
    quota twice."""
    return rows.insert(UsageRecord(
        user_id=reply.conversation.owner_id,
        message=reply,
        model=model,
        model_name=model.display_name,
        provider_name=model.provider.name,
        status=Status.STREAMING,
        purpose=purpose,
        prompt_tokens=prompt.estimated_tokens,
        completion_tokens=limits.cut_tokens,
        tokens_estimated=True,
        cost=limits.reserve_cost(
            prompt.estimated_tokens, model.price_input_per_mtok, model.price_output_per_mtok
        ),
        cost_source=UsageRecord.CostSource.NONE,
    ))  # fmt: skip


def _start(user, conversation, question: Message, model, prompt, busy=(), first_text=""):
    """A new reply under `question`, admitted (the account's lock last), with its ledger row."""
    limits_now = quotas.limits_for(user)
    reply = rows.insert(Message(
        conversation=conversation,
        parent=question,
        role=Message.Role.ASSISTANT,
        status=Status.STREAMING,
        model=model,
        model_name=model.display_name,
        left_out=prompt.left_out,
    ))  # fmt: skip
    _touch(conversation, model, reply, first_text)
    kind = UsageRecord.Purpose.REPLY
    return reply, _admit_and_record(
        user, conversation, reply, model, prompt, limits_now, kind, busy
    )


def _admit_and_record(user, conversation, reply, model, prompt, limits_now, purpose, busy=()):
    """Admit the reply and write its ledger row; its bounds. With no limit that counts
    the ledger (most people), the row comes before the account's lock, which then holds
    only the running-reply count and the commit (on PostgreSQL each statement under it
    is a round trip the account's other starts wait through); else after the checks."""
    if limits_now.is_open():
        limits = _bounds(conversation, model, prompt, quotas.Allowance())
        ledger = _ledger_row(reply, model, prompt, limits, purpose)
        _admit(user, model, limits_now, own=reply.pk, busy=busy)
    else:
        allowance = _admit(user, model, limits_now, own=reply.pk, busy=busy)
        limits = _bounds(conversation, model, prompt, allowance)
        ledger = _ledger_row(reply, model, prompt, limits, purpose)
    reply.ledger_id = ledger.pk
    return limits


def _touch(conversation, model, leaf: Message, first_text: str = ""):
    """The conversation now shows `leaf`'s branch and uses `model`."""
    conversation.model = model
    # By id: the leaf refers to its conversation, and the two holding each other would
    # be a cycle per send for the collector's slow full passes (chatsite/asgi.py).
    conversation.active_leaf_id = leaf.pk
    fields = ("model", "active_leaf", "updated")
    if first_text and not conversation.title:
        conversation.title = first_words(first_text)
        fields += ("title",)
    rows.update(conversation, fields)


def first_words(text: str, limit: int = 60) -> str:
    words = " ".join(text.split())
    return words if len(words) <= limit else words[: limit - 1].rsplit(" ", 1)[0] + "…"


def _ask(user, conversation, parent_path: list[int], earlier, content: str, model_id=None):
    """A question under the end of `parent_path` (whose turns are `earlier`), and its
    reply. Returns both and the plan."""
    model = _pick_model(user, conversation, model_id)
    prompt = _build_prompt(conversation, model, [*earlier, {"role": "user", "content": content}])
    question = rows.insert(Message(
        conversation=conversation,
        parent_id=parent_path[-1] if parent_path else None,
        role=Message.Role.USER,
        content=content,
    ))  # fmt: skip
    first = not conversation.title
    reply, limits = _start(user, conversation, question, model, prompt, parent_path[-1:], content)
    title_for = (content, conversation.title) if first else None
    return [question, reply], _plan(conversation, model, reply, prompt, limits, title_for=title_for)


@transaction.atomic
def send(user, conversation_id, content, model_id=None) -> tuple[list[Message], Plan]:
    """A new question at the end of the branch shown, and its reply."""
    conversation = locked_conversation(user, conversation_id)
    content = _clean_content(content)
    path, earlier = thread.active_branch(conversation)
    return _ask(user, conversation, path, earlier, content, model_id)


@transaction.atomic
def edit(user, conversation_id, message_id, content) -> tuple[list[Message], Plan]:
    """A new version of a question, with its own reply; the old branch stays whole."""
    conversation = locked_conversation(user, conversation_id)
    question = owned_message(conversation, message_id)
    if question.role != Message.Role.USER:
        raise Refused("Only your own messages can be edited.")
    content = _clean_content(content)
    parent_path = Tree.of(conversation.pk).path_to(question.parent_id)
    return _ask(user, conversation, parent_path, thread.history(parent_path), content)


@transaction.atomic
def regenerate(user, conversation_id, message_id=None, model_id=None) -> tuple[Message, Plan]:
    """Another version of a reply (any reply; the end of the branch shown if no id),
    optionally by another model. The old versions stay. A question with no reply
    yet is answered."""
    conversation = locked_conversation(user, conversation_id)
    tree, path = thread.active_path(conversation)
    target = owned_message(conversation, message_id) if message_id else None
    if target is None and path:
        target = Message.objects.get(pk=path[-1])
    if target is None:
        raise Refused("There is nothing to regenerate yet.")
    question = target if target.role == Message.Role.USER else target.parent
    if question is None:
        raise Refused("There is no question to answer again.")
    if target.is_streaming:
        raise Refused("This reply is still being written; stop it first.")
    model = _pick_model(user, conversation, model_id)
    prompt = _build_prompt(conversation, model, thread.history(tree.path_to(question.pk)))
    reply, limits = _start(user, conversation, question, model, prompt)
    versions = tree.add(reply.pk, question.pk).versions(reply.pk)
    return reply, _plan(conversation, model, reply, prompt, limits, versions=versions)


def _continuable(conversation, message_id, tree: Tree) -> Message:
    reply = owned_message(conversation, message_id)
    if reply.role != Message.Role.ASSISTANT:
        raise Refused("Only a reply can be continued.")
    if reply.is_streaming:
        raise Refused("This reply is already being written.")
    if tree.children.get(reply.pk):
        raise Refused("Only the last reply of a branch can be continued.")
    cut_short = reply.status != Status.COMPLETE or reply.finish_reason == "length"
    if not cut_short or not reply.content.strip():
        raise Refused("This reply is complete; regenerate it for another version.")
    return reply


@transaction.atomic
def continue_reply(user, conversation_id, message_id) -> tuple[Message, Plan]:
    """Extend a reply that stopped short, in place, with no user turn: the partial
    text is the prompt's tail (providers.continuation says how, per backend)."""
    conversation = locked_conversation(user, conversation_id)
    tree = Tree.of(conversation.pk)
    reply = _continuable(conversation, message_id, tree)
    try:
        model = _pick_model(user, conversation, reply.model_id)
    except Refused:
        model = _pick_model(user, conversation, None)
    history = [
        *thread.history(tree.path_to(reply.parent_id)),
        {"role": "assistant", "content": reply.content},
    ]
    prompt = _build_prompt(conversation, model, history)
    resume = Resume(
        reply.content, reply.reasoning, reply.reasoning_seconds, reply.prompt_tokens or 0,
        reply.completion_tokens or 0, reply.cost,
    )  # fmt: skip
    limits_now = quotas.limits_for(user)
    reply.status, reply.error_kind, reply.error_message = Status.STREAMING, "", ""
    reply.save(update_fields=["status", "error_kind", "error_message", "updated"])
    _touch(conversation, model, reply)
    purpose = UsageRecord.Purpose.CONTINUATION
    limits = _admit_and_record(user, conversation, reply, model, prompt, limits_now, purpose)
    versions = tree.versions(reply.pk)
    return reply, _plan(
        conversation, model, reply, prompt, limits, resume=resume, versions=versions
    )


@transaction.atomic
def start_conversation(user, content, model_id=None) -> tuple[Conversation, list[Message], Plan]:
    """A new conversation with its first question; nothing is kept if the send is refused."""
    conversation = Conversation.objects.create(owner=user)
    messages, plan = send(user, conversation.pk, content, model_id)
    return conversation, messages, plan
