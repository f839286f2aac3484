"""Test a provider's connection and sync its model list with the backend's."""

import time
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction

from providers import client, reasoning
from providers.base import DiscoveredModel
from providers.models import Model, Provider

# The sampling parameters each wire format takes, by their canonical names. A
# synced model starts with these, so its settings panel is not empty.
STANDARD_PARAMS = {
    "openai": ["temperature", "top_p", "presence_penalty", "frequency_penalty"],
    "llamacpp": [
        "temperature", "top_p", "top_k", "repetition_penalty", "presence_penalty",
        "frequency_penalty",
    ],
    "workers_ai": [
        "temperature", "top_p", "top_k", "repetition_penalty", "presence_penalty",
        "frequency_penalty",
    ],
}  # fmt: skip


def default_max_tokens(context_window: int | None) -> int:
    """A sane reply length for a new model: the site default, at most half its context."""
    default = settings.DEFAULT_REPLY_RESERVE
    return max(16, min(default, context_window // 2)) if context_window else default


@dataclass
class SyncResult:
    added: int
    flagged_missing: int
    found_again: int


def check_connection(provider: Provider) -> tuple[float, int]:
    """Ask the backend for its models; return (latency in ms, how many). Raises ProviderError."""
    endpoint = client.endpoint_for(provider)
    started = time.perf_counter()
    found = async_to_sync(client.discover)(endpoint)
    return (time.perf_counter() - started) * 1000, len(found)


def sync_models(provider: Provider) -> SyncResult:
    found = async_to_sync(client.discover)(client.endpoint_for(provider))
    return apply(provider, found)


@transaction.atomic
def apply(provider: Provider, found: list[DiscoveredModel]) -> SyncResult:
    """New models arrive disabled; models the backend no longer lists are flagged, not deleted."""
    longest = Model._meta.get_field("remote_id").max_length
    remote = {m.remote_id: m for m in found if 0 < len(m.remote_id) <= longest}
    known = {m.remote_id: m for m in provider.models.all()}
    added = 0
    for remote_id, model in remote.items():
        if remote_id not in known:
            Model.objects.create(
                provider=provider,
                remote_id=remote_id,
                display_name=remote_id.rsplit("/", 1)[-1][:200],
                context_window=model.context_window,
                default_max_tokens=default_max_tokens(model.context_window),
                accepted_params=list(STANDARD_PARAMS.get(provider.wire_format, [])),
                reasoning=reasoning.control_for(remote_id),
                enabled=False,
            )
            added += 1
        elif model.context_window and not known[remote_id].context_window:
            known[remote_id].context_window = model.context_window  # learnt, never overwritten
            known[remote_id].save(update_fields=["context_window"])
    missing = [m.pk for rid, m in known.items() if rid not in remote and not m.missing_upstream]
    back = [m.pk for rid, m in known.items() if rid in remote and m.missing_upstream]
    Model.objects.filter(pk__in=missing).update(missing_upstream=True)
    Model.objects.filter(pk__in=back).update(missing_upstream=False)
    return SyncResult(added, len(missing), len(back))
