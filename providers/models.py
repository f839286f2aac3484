"""Providers (where models run) and the models people can chat with."""

import os

from django.contrib.auth.models import Group
from django.db import models

from providers import crypto
from providers.prompt_formats import FORMATS


class WireFormat(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible chat completions"
    LLAMACPP = "llamacpp", "llama.cpp /completion"
    WORKERS_AI = "workers_ai", "Cloudflare Workers AI"


# Canonical sampling parameter names; each wire format maps them onto its own.
SAMPLING_PARAMS = (
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
)

# How a model's thinking is controlled, when it is (see providers.openai._reasoning).
REASONING_CONTROLS = [
    ("effort", "reasoning_effort (low, medium, high)"),
    ("switch", "chat_template_kwargs.enable_thinking (on or off)"),
]
# How "Continue" extends a stopped reply on a chat-messages backend (see
# providers.continuation); /completion prompt formats always prefill.
CONTINUE_MODES = [
    ("instruction", "a hidden instruction after the partial reply (works everywhere)"),
    ("prefill", "the partial reply as the final assistant message (vLLM, llama.cpp, Ollama)"),
]
REASONING_EFFORTS = [
    ("off", "Off"),
    ("low", "Low"),
    ("medium", "Medium"),
    ("high", "High"),
]


class Provider(models.Model):
    name = models.CharField(max_length=100, unique=True)
    wire_format = models.CharField(max_length=20, choices=WireFormat.choices)
    base_url = models.URLField(
        max_length=500,
        help_text="e.g. https://api.deepinfra.com/v1/openai, http://127.0.0.1:8080 for "
        "llama.cpp, https://api.cloudflare.com/client/v4 for Workers AI",
    )
    account_id = models.CharField(
        max_length=100, blank=True, help_text="Workers AI only: your Cloudflare account id."
    )
    account_id_env = models.CharField(
        max_length=100, blank=True, help_text="Or read the account id from this variable."
    )
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Environment variable to read the API key from when none is stored.",
    )
    requires_key = models.BooleanField(
        default=True, help_text="Off for local servers (llama.cpp, vLLM, Ollama) with no key."
    )
    enabled = models.BooleanField(default=False)
    send_usage_option = models.BooleanField(
        default=True,
        help_text="OpenAI-compatible only: ask for token usage in streams "
        "(stream_options.include_usage). Turn off for servers that reject it.",
    )
    extra_headers = models.JSONField(default=dict, blank=True)
    connect_timeout = models.FloatField(default=10.0, help_text="Seconds to connect.")
    read_timeout = models.FloatField(
        default=60.0, help_text="Seconds of silence allowed between chunks."
    )
    total_timeout = models.FloatField(default=600.0, help_text="Seconds allowed for one reply.")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def set_api_key(self, key: str) -> None:
        self.api_key_encrypted = crypto.encrypt(key) if key else ""

    def api_key(self) -> str:
        if self.api_key_encrypted:
            return crypto.decrypt(self.api_key_encrypted)
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def resolved_account_id(self) -> str:
        if self.account_id:
            return self.account_id
        return os.environ.get(self.account_id_env, "") if self.account_id_env else ""

    @property
    def has_key(self) -> bool:
        return bool(self.api_key_encrypted) or bool(
            self.api_key_env and os.environ.get(self.api_key_env)
        )

    @property
    def usable(self) -> bool:
        return self.enabled and (self.has_key or not self.requires_key)


class ModelQuerySet(models.QuerySet):
    def usable(self):
        return self.filter(enabled=True, provider__enabled=True)

    def available_to(self, user):
        """Enabled models on enabled providers that this user's groups may use."""
        usable = self.usable()
        if user.is_superuser:
            return usable
        return usable.filter(
            models.Q(allowed_groups__isnull=True) | models.Q(allowed_groups__user=user)
        ).distinct()


class Model(models.Model):
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="models")
    remote_id = models.CharField(max_length=300, help_text="The model name the backend expects.")
    display_name = models.CharField(max_length=200)
    enabled = models.BooleanField(default=False)
    endpoint_url = models.URLField(
        max_length=500,
        blank=True,
        help_text="Overrides the provider's base URL (LibertAI runs each model on its own URL).",
    )
    prompt_format = models.CharField(
        max_length=20,
        blank=True,
        choices=[(key, fmt.label) for key, fmt in FORMATS.items()],
        help_text="For raw-prompt backends (llama.cpp /completion, Workers AI raw mode).",
    )
    raw_prompt = models.BooleanField(
        default=False, help_text="Workers AI: send a prompt rendered with the prompt format."
    )
    reasoning = models.CharField(
        "reasoning control",
        max_length=10,
        blank=True,
        choices=REASONING_CONTROLS,
        help_text="How this model's thinking is switched or graded, if it thinks. Its thinking "
        "is shown apart from the answer whatever this says.",
    )
    reasoning_effort = models.CharField(
        max_length=10,
        blank=True,
        choices=REASONING_EFFORTS,
        help_text="The default effort; a conversation may choose another. Blank: the backend's.",
    )
    continue_mode = models.CharField(
        "how to continue a reply",
        max_length=12,
        choices=CONTINUE_MODES,
        default="instruction",
        help_text="For chat-messages backends. Prefill continues the text itself; use it "
        "where the backend supports a final assistant message.",
    )
    context_window = models.PositiveIntegerField(null=True, blank=True)
    default_max_tokens = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    accepted_params = models.JSONField(
        default=list, blank=True, help_text=f"Any of: {', '.join(SAMPLING_PARAMS)}."
    )
    param_defaults = models.JSONField(default=dict, blank=True)
    price_input_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="USD per million."
    )
    price_output_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="USD per million."
    )
    allowed_groups = models.ManyToManyField(
        Group, blank=True, help_text="Who may use this model; none means everyone."
    )
    missing_upstream = models.BooleanField(
        default=False, help_text="The last model sync did not find this model."
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = ModelQuerySet.as_manager()

    class Meta:
        ordering = ["provider__name", "display_name"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "remote_id"], name="unique_remote_id")
        ]

    def __str__(self):
        return f"{self.display_name} ({self.provider.name})"

    def allows(self, user) -> bool:
        return Model.objects.available_to(user).filter(pk=self.pk).exists()
