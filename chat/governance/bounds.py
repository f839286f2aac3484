"""How long a reply may run: the output limit sent upstream, and the hard cut.

Every upstream request carries `max_tokens`, the smallest of:
- the conversation's setting (else the model's default, else DEFAULT_REPLY_RESERVE);
- the model's maximum output;
- what the context window leaves after the prompt;
- what the user's daily tokens and monthly budget have left;
- MAX_REPLY_TOKENS.

A backend may ignore it, so the job also cuts the reply itself at `cut_tokens`
and `cut_bytes`. When a quota is what binds, the cut is exactly at the quota;
otherwise it allows slack over `max_tokens` (twice it), because the job can
only estimate tokens and must not cut a well-behaved reply short.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from chat.governance.quotas import Allowance

MILLION = Decimal(1_000_000)

REASONS = {
    "length": "Stopped: the reply reached the length limit.",
    "tokens": "Stopped: your daily token quota was reached.",
    "cost": "Stopped: your monthly budget was reached.",
}


class NoRoom(Exception):
    """The quota left cannot pay for even the prompt; the message says which and when."""


@dataclass(frozen=True)
class Bounds:
    max_tokens: int  # asked of the backend
    cut_tokens: int  # the job stops the reply past this many (estimated) tokens
    cut_bytes: int  # and past this many bytes of text
    cut_reason: str  # a key of REASONS: why a cut at cut_tokens happened

    def reserve_cost(self, prompt_tokens: int, price_in, price_out) -> Decimal:
        """The most this reply can cost, held against the budget while it runs."""
        if price_in is None and price_out is None:
            return Decimal(0)
        spend = (price_in or 0) * prompt_tokens + (price_out or 0) * self.cut_tokens
        return Decimal(spend) / MILLION


def spent(reported, price_in, price_out, prompt_tokens: int, completion_tokens: int):
    """What a generation cost: the provider's own figure when it sent one, else the
    model's prices, else None (no prices set)."""
    if reported is not None:
        return reported
    if price_in is None and price_out is None:
        return None
    return ((price_in or 0) * prompt_tokens + (price_out or 0) * completion_tokens) / MILLION


def _affordable(allowance: Allowance, prompt_tokens: int, price_in, price_out) -> int | None:
    """Reply tokens the monthly budget still pays for, or None when it sets no bound."""
    if allowance.cost_left is None or not price_out:
        return None
    left = allowance.cost_left - (price_in or 0) * prompt_tokens / MILLION
    return int(left * MILLION / price_out)


def decide(
    *,
    wanted: int | None,
    model,
    context_left: int,
    prompt_tokens: int,
    allowance: Allowance,
) -> Bounds:
    wanted = wanted or model.default_max_tokens or settings.DEFAULT_REPLY_RESERVE
    ceilings = [wanted, model.max_output_tokens, context_left, settings.MAX_REPLY_TOKENS]
    max_tokens = max(1, min(c for c in ceilings if c))
    # Generous slack: tokens are estimated here, and the backend should stop itself.
    cut, reason = min(settings.MAX_REPLY_TOKENS, max(2 * max_tokens, max_tokens + 64)), "length"
    quota_bounds = {
        "tokens": None if allowance.tokens_left is None else allowance.tokens_left - prompt_tokens,
        "cost": _affordable(
            allowance, prompt_tokens, model.price_input_per_mtok, model.price_output_per_mtok
        ),
    }
    for name, room in quota_bounds.items():
        if room is None:
            continue
        if room < 1:
            raise NoRoom(name)
        max_tokens = min(max_tokens, room)
        if room <= cut:
            cut, reason = room, name
    return Bounds(max_tokens, cut, settings.MAX_REPLY_BYTES, reason)
