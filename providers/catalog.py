"""Install the seed providers and models from catalog.toml, idempotently.

Only what is missing is added; rows that exist are left as an admin may have
changed them. A provider starts enabled only if it can work: it needs no key,
or its key's environment variable is set.
"""

import tomllib
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from providers.models import Model, Provider

CATALOG = Path(__file__).with_name("catalog.toml")
PROVIDER_FIELDS = ("wire_format", "base_url", "api_key_env", "account_id_env", "requires_key")
MODEL_FIELDS = (
    "display_name",
    "endpoint_url",
    "prompt_format",
    "context_window",
    "default_max_tokens",
    "max_output_tokens",
    "accepted_params",
    "param_defaults",
    "reasoning",
    "reasoning_effort",
)


@dataclass
class InstallResult:
    providers_added: int = 0
    models_added: int = 0


def load(path: Path = CATALOG) -> list[dict]:
    with path.open("rb") as handle:
        return tomllib.load(handle)["providers"]


@transaction.atomic
def install(entries: list[dict] | None = None) -> InstallResult:
    result = InstallResult()
    for entry in entries if entries is not None else load():
        defaults = {field: entry[field] for field in PROVIDER_FIELDS if field in entry}
        provider, created = Provider.objects.get_or_create(name=entry["name"], defaults=defaults)
        if created:
            provider.enabled = provider.has_key or not provider.requires_key
            provider.save(update_fields=["enabled"])
            result.providers_added += 1
        for model in entry.get("models", []):
            fields = {field: model[field] for field in MODEL_FIELDS if field in model}
            _, added = Model.objects.get_or_create(
                provider=provider,
                remote_id=model["remote_id"],
                defaults={**fields, "enabled": True},
            )
            result.models_added += added
    return result
