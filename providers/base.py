"""What every wire format shares: the request, the events, the one error type.

A provider module turns a ChatRequest into an async stream of events:
TextDelta (more text), ReasoningDelta (more thinking, see
providers.reasoning), Usage (token counts, cost if the backend says) and one
Finish (why it ended). Anything that goes wrong becomes a ProviderError with a
kind from a small set, each with a message a person can act on. The raw
upstream body and the API key never go into an error: they could reach a
browser or a log line.
"""

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Endpoint:
    """A snapshot of a provider's connection settings, safe to use off the ORM."""

    wire_format: str
    base_url: str
    api_key: str = ""
    account_id: str = ""
    headers: dict = field(default_factory=dict)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    total_timeout: float = 600.0
    send_usage_option: bool = True

    def __repr__(self):  # never print the key
        return f"Endpoint({self.wire_format}, {self.base_url})"


@dataclass(frozen=True)
class ChatRequest:
    model: str  # the backend's model id
    messages: list[dict]  # [{"role": "system"|"user"|"assistant", "content": str}]
    max_tokens: int | None = None
    params: dict = field(default_factory=dict)  # canonical sampling names, see SAMPLING_PARAMS
    stop: list[str] = field(default_factory=list)
    prompt_format: str = ""  # for raw-prompt backends
    raw_prompt: bool = False  # Workers AI: send a rendered prompt instead of messages
    reasoning_control: str = ""  # "effort" or "switch": how to pass reasoning_effort, if at all
    reasoning_effort: str = ""  # "off", "low", "medium", "high", or "" for the backend's default
    # The last message is a partial assistant reply to extend in place (providers.continuation);
    # chat backends take it as "prefill" or with a hidden "instruction".
    continues: bool = False
    continue_mode: str = "instruction"


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """More of the model's thinking: shown apart, stored apart, never sent back."""

    text: str


@dataclass(frozen=True)
class AnswerWasReasoning:
    """The text so far was thinking (a lone `</think>` arrived): move it."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: Decimal | None = None  # as reported by the provider

    @classmethod
    def reported(cls, prompt, completion, cost=None) -> "Usage":
        """Usage as a backend sent it: a figure that is not a plausible count or price
        (negative, fractional, huge, NaN, text) is left out, and the reply's own
        estimate stands in for it. Stored as sent, it failed the reply's final save."""
        return cls(_count(prompt), _count(completion), _price(cost))


MAX_COUNT = 2**31 - 1  # what every database's integer column holds
MAX_PRICE = Decimal(10) ** 6  # a reply's cost column holds less than this


def _count(value) -> int | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 12.0: some servers write every number as a float
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def _price(value) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        price = Decimal(str(value))
    except ArithmeticError:  # decimal.InvalidOperation: not a number at all
        return None
    return price if price.is_finite() and 0 <= price < MAX_PRICE else None


@dataclass(frozen=True)
class Finish:
    reason: str  # "stop" | "length" (the provider's word; "stopped"/"error" come from the app)


@dataclass(frozen=True)
class Completion:
    """A whole non-streamed reply."""

    text: str
    usage: Usage
    finish: str


@dataclass(frozen=True)
class DiscoveredModel:
    remote_id: str
    context_window: int | None = None

    def __post_init__(self):
        # A window that is not a plausible count (0, negative, huge, text) is unknown.
        object.__setattr__(self, "context_window", _count(self.context_window) or None)


MESSAGES = {
    "auth": "The model's provider rejected the API key; ask an admin to check it.",
    "rate_limited": "The model's provider is rate-limiting requests; try again later.",
    "bad_request": "The model's provider refused the request; try other settings or ask an admin.",
    "context_too_long": "The conversation is too long for this model; start a new chat or "
    "pick a model with a larger context window.",
    "unavailable": "The model's provider is unavailable right now; try again in a moment.",
    "timeout": "The model's provider took too long to answer; try again.",
    "malformed": "The model's provider sent a reply that could not be read; try again or "
    "ask an admin.",
}
KINDS = tuple(MESSAGES)


class ProviderError(Exception):
    """One error type for every backend. `detail` is for logs and never holds a key or body."""

    def __init__(self, kind: str, detail: str = "", retry_after: float | None = None):
        if kind not in MESSAGES:
            raise ValueError(f"unknown provider error kind {kind!r}")
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after
        # For admins only (Test connection, Sync, the log): what was called and what
        # came back, with the key taken out. Never shown to chat users.
        self.url = ""
        self.status: int | None = None
        self.excerpt = ""
        super().__init__(f"{kind}: {detail}" if detail else kind)

    def for_admin(self) -> str:
        """The status, the URL called and the start of the answer, for someone fixing it."""
        what = f"HTTP {self.status}" if self.status else self.detail or self.kind
        parts = [f"{self.message} ({what}"]
        if self.url:
            parts.append(f" from {self.url}")
        parts.append(")")
        if self.excerpt:
            parts.append(f" — the server said: {self.excerpt}")
        return "".join(parts)

    @property
    def message(self) -> str:
        if self.kind == "rate_limited" and self.retry_after:
            return (
                "The model's provider is rate-limiting requests; "
                f"try again in {max(1, round(self.retry_after))} seconds."
            )
        return MESSAGES[self.kind]
