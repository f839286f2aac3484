"""Build the prompt: the system prompt plus as many of the latest turns as fit.

There is no tokenizer for every backend, so tokens are estimated
conservatively (about three characters a token, plus a few per message for the
template). The reply's room is reserved first. Older turns that do not fit are
left out and counted (the reply says so); the newest user message is never
cut: if it alone does not fit, the user is told.
"""

from dataclasses import dataclass

from django.conf import settings

CHARS_PER_TOKEN = 3
PER_MESSAGE_OVERHEAD = 8


class ContextTooLongError(Exception):
    def __init__(self, needed: int, available: int):
        self.needed, self.available = needed, available
        super().__init__(
            f"Your message is too long for this model: about {needed} tokens, and the model "
            f"has room for about {available}. Shorten it or pick a model with a larger context."
        )


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + PER_MESSAGE_OVERHEAD


@dataclass
class Prompt:
    messages: list[dict]
    left_out: int
    estimated_tokens: int


def reply_reserve(model, max_tokens: int | None) -> int:
    return max_tokens or model.default_max_tokens or settings.DEFAULT_REPLY_RESERVE


def build(model, system_prompt: str, history: list[dict], max_tokens: int | None) -> Prompt:
    """`history` is oldest first and ends with the newest user message."""
    window = model.context_window or settings.DEFAULT_CONTEXT_WINDOW
    budget = window - reply_reserve(model, max_tokens)
    fixed = [{"role": "system", "content": system_prompt}] if system_prompt else []
    used = sum(estimate_tokens(m["content"]) for m in fixed)
    newest = history[-1]
    used += estimate_tokens(newest["content"])
    if used > budget:
        raise ContextTooLongError(used, max(budget, 0))
    kept = [newest]
    for message in reversed(history[:-1]):
        cost = estimate_tokens(message["content"])
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    return Prompt(fixed + kept, len(history) - len(kept), used)
