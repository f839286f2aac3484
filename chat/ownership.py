"""The user's own rows, found by id, and the one refusal every command raises.

Another user's id, a missing id and junk all look the same from outside:
"does not exist". Every command goes through these lookups.
"""

from django.contrib.auth import get_user_model

from chat.models import Conversation, Message

Status = Message.Status
MAX_ID = 2**63 - 1  # the largest id a database row can have


class Refused(Exception):
    """A command the user may not run now; the message says why and what to do."""


def current_user(user_id):
    """The account as it is now (rights, groups, staff), or None once it is deactivated."""
    return get_user_model().objects.filter(pk=user_id, is_active=True).first()


def owned_conversation(user, conversation_id) -> Conversation | None:
    return Conversation.objects.filter(pk=conversation_id, owner=user).first()


def locked_conversation(user, conversation_id) -> Conversation:
    """The user's conversation, locked for this transaction: its commands run one at a time."""
    return Conversation.objects.select_for_update().get(pk=conversation_id, owner=user)


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
