"""Reading a `POST /v1/chat/completions` body into an ApiCall, or BadRequest (400).

The web chat's rules: text messages within the same length limits, sampling
values within the same ranges (chat.settings_form.RANGES), and parameters the
model does not accept dropped later, as the chat drops them. What this site
cannot honour is refused rather than ignored: tools, images, `n` above 1.
Other unknown fields (user, seed, metadata, logprobs…) are dropped.
"""

import json
import math
from dataclasses import dataclass, field

from django.conf import settings

from chat.settings_form import MAX_TOKENS_CEILING, RANGES
from providers.models import REASONING_EFFORTS

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_MESSAGES = 1000
MAX_STOPS = 4
REFUSED = {
    "tools": "Tools (function calling) are not supported here.",
    "functions": "Functions are not supported here.",
    "tool_choice": "Tools (function calling) are not supported here.",
    "audio": "Audio is not supported here.",
}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass
class ApiCall:
    model: str
    messages: list[dict]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    params: dict = field(default_factory=dict)  # canonical sampling names
    stop: list[str] = field(default_factory=list)
    reasoning_effort: str = ""


def _refuse_constant(name):
    raise BadRequest(f"{name} is not a number JSON allows.")


def parse(body: bytes) -> ApiCall:
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    for name, why in REFUSED.items():
        if data.get(name) not in (None, [], {}):
            raise BadRequest(why, name)
    if data.get("n") not in (None, 1):
        raise BadRequest("Only one choice (n = 1) is supported.", "n")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("Name a model: see GET /v1/models.", "model")
    call = ApiCall(model=model.strip(), messages=_messages(data.get("messages")))
    call.stream = _flag(data, "stream")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object.", "stream_options")
    call.include_usage = call.stream and _flag(options, "include_usage")
    call.max_tokens = _max_tokens(data)
    call.params = _sampling(data)
    call.stop = _stops(data.get("stop"))
    effort = data.get("reasoning_effort")
    if effort is not None:
        if effort not in {key for key, _ in REASONING_EFFORTS}:
            message = "reasoning_effort must be off, low, medium or high."
            raise BadRequest(message, "reasoning_effort")
        call.reasoning_effort = effort
    return call


def _flag(data: dict, name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false.", name)
    return value


def _text(content, where: str) -> str:
    """A message's content: a string, or a list of text parts joined."""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest(f"{where}: only text content is supported.", "messages")
            if not isinstance(part.get("text"), str):
                raise BadRequest(f"{where}: a text part has no text.", "messages")
            parts.append(part["text"])
        text = "".join(parts)
    else:
        raise BadRequest(f"{where} has no text content.", "messages")
    if len(text) > settings.MAX_MESSAGE_CHARS:
        raise BadRequest(
            f"{where} is {len(text):,} characters long; the limit is "
            f"{settings.MAX_MESSAGE_CHARS:,}.",
            "messages",
        )
    return text


def _messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list.", "messages")
    if len(messages) > MAX_MESSAGES:
        raise BadRequest(f"At most {MAX_MESSAGES} messages are accepted.", "messages")
    read = []
    for number, message in enumerate(messages, 1):
        where = f"Message {number}"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise BadRequest(f"{where} has a role this API does not take: {role!r}.", "messages")
        read.append({"role": ROLES[role], "content": _text(message.get("content"), where)})
    if read[-1]["role"] == "system":
        raise BadRequest("The last message must be from the user or the assistant.", "messages")
    return read


def _number(data: dict, name: str, low, high, integer: bool = False):
    value = data[name]
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise BadRequest(f"{name} must be a number.", name)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}.", name)
    return value


def _max_tokens(data: dict) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        if data.get(name) is not None:
            return _number(data, name, 1, MAX_TOKENS_CEILING, integer=True)
    return None


def _sampling(data: dict) -> dict:
    params = {}
    for name, (low, high, _) in RANGES.items():
        if data.get(name) is not None:
            params[name] = _number(data, name, low, high, integer=isinstance(low, int))
    return params


def _stops(stop) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest("stop must be a string or a list of strings.", "stop")
    if len(stops) > MAX_STOPS:
        raise BadRequest(f"At most {MAX_STOPS} stop sequences are accepted.", "stop")
    return stops
