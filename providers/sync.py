"""Test a provider's connection and sync its model list with the backend's."""

import time
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.db import transaction

from providers import client
from providers.base import DiscoveredModel
from providers.models import Model, Provider


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
    remote = {m.remote_id: m for m in found}
    known = {m.remote_id: m for m in provider.models.all()}
    added = 0
    for remote_id, model in remote.items():
        if remote_id not in known:
            Model.objects.create(
                provider=provider,
                remote_id=remote_id,
                display_name=remote_id.rsplit("/", 1)[-1][:200],
                context_window=model.context_window,
                enabled=False,
            )
            added += 1
    missing = [m.pk for rid, m in known.items() if rid not in remote and not m.missing_upstream]
    back = [m.pk for rid, m in known.items() if rid in remote and m.missing_upstream]
    Model.objects.filter(pk__in=missing).update(missing_upstream=True)
    Model.objects.filter(pk__in=back).update(missing_upstream=False)
    return SyncResult(added, len(missing), len(back))
