"""Conversations and their messages.

A reply is a Message row from its first moment (status `streaming`), so a
refresh, another tab or a crash never loses it.

A conversation is a tree: each message has a parent (none for a first turn),
its versions are its siblings, and the conversation remembers the leaf it
shows. The visible thread is the path from the root to that leaf (chat.tree).
"""

import uuid

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    model = models.ForeignKey(
        "providers.Model", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    system_prompt = models.TextField(blank=True)
    settings = models.JSONField(default=dict, blank=True)  # sampling overrides, max_tokens
    pinned = models.BooleanField(default=False)
    # The end of the branch shown: the thread is the path from the root to it.
    active_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-pinned", "-updated"], name="conv_sidebar")]

    def __str__(self):
        return self.title or "New chat"


def thought_label_seconds(seconds: float) -> str:
    """'3 s' or '2 min 5 s': how long a model thought, for its folded thinking block."""
    whole = max(1, round(seconds))
    return f"{whole // 60} min {whole % 60} s" if whole >= 60 else f"{whole} s"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETE = "complete"
        STOPPED = "stopped"
        ERROR = "error"
        INTERRUPTED = "interrupted"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # The turn this one answers or follows; siblings (same parent) are versions.
    # Deleting a message deletes its subtree.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    # The model's thinking, kept apart: shown folded, never sent back as context.
    reasoning = models.TextField(blank=True)
    reasoning_seconds = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETE)
    model = models.ForeignKey(
        "providers.Model", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model_name = models.CharField(max_length=200, blank=True)  # survives the model's deletion
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    tokens_estimated = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    finish_reason = models.CharField(max_length=12, blank=True)
    error_kind = models.CharField(max_length=20, blank=True)
    error_message = models.CharField(max_length=300, blank=True)
    left_out = models.PositiveIntegerField(
        default=0, help_text="Earlier messages that did not fit the model's context."
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)  # the job's heartbeat while streaming

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["conversation", "id"], name="msg_thread"),
            models.Index(
                fields=["status", "updated"],
                name="msg_streaming",
                condition=models.Q(status="streaming"),
            ),
        ]

    def __str__(self):
        return f"{self.role}: {self.content[:40]}"

    @property
    def is_streaming(self) -> bool:
        return self.status == self.Status.STREAMING


class Preference(models.Model):
    """Per-user choices that outlive a conversation."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_preference"
    )
    last_model = models.ForeignKey(
        "providers.Model", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self):
        return f"preferences of {self.user}"


class Quota(models.Model):
    """Limits for one user, or defaults for a group. Empty fields mean no limit.

    A user's own quota wins field by field; otherwise the most generous of their
    groups' quotas applies. Staff without a quota of their own are exempt.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="quota",
    )
    group = models.OneToOneField(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="quota"
    )
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveIntegerField(null=True, blank=True)
    cost_per_month = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    max_concurrent = models.PositiveIntegerField(
        null=True, blank=True, help_text="Replies at once; empty uses MAX_CONCURRENT_GENERATIONS."
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False) ^ models.Q(group__isnull=False),
                name="quota_for_user_xor_group",
            )
        ]

    def __str__(self):
        return f"quota for {self.user or self.group}"


class ApiKey(models.Model):
    """A person's key for the OpenAI-compatible API (chat.api). Only a hash of the key
    is stored; the prefix lets its owner and admins recognise it."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The key's first characters.")
    digest = models.CharField(max_length=64, unique=True, editable=False)  # SHA-256, hex
    allowed_models = models.ManyToManyField(
        "providers.Model", blank=True, related_name="+",
        help_text="The models this key may use; none means all the owner may use.",
    )  # fmt: skip
    expires = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        permissions = [("use_api", "Can create and use personal API keys")]

    def __str__(self):
        return f"{self.prefix}… ({self.name})"


class UsageRecord(models.Model):
    """The ledger: one row per generation (a reply, a continuation of it, a title),
    kept when the message is deleted."""

    class CostSource(models.TextChoices):
        PROVIDER = "provider"
        PRICES = "prices"
        NONE = "none"

    class Purpose(models.TextChoices):
        REPLY = "reply"
        CONTINUATION = "continue", "continuation of a reply"
        TITLE = "title", "conversation title"
        API = "api", "API request"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_records"
    )
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    model = models.ForeignKey(
        "providers.Model", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model_name = models.CharField(max_length=200)
    provider_name = models.CharField(max_length=100)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    tokens_estimated = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    cost_source = models.CharField(max_length=10, choices=CostSource.choices)
    latency_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Time to first token."
    )
    duration_ms = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=12, choices=Message.Status.choices)
    purpose = models.CharField(max_length=8, choices=Purpose.choices, default=Purpose.REPLY)
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["user", "created"], name="usage_user_time")]

    def __str__(self):
        return f"{self.user} {self.model_name} {self.created:%Y-%m-%d %H:%M}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class SiteSettings(models.Model):
    """Site-wide choices an admin makes in the admin (one row)."""

    class Titles(models.TextChoices):
        CONVERSATION_MODEL = "conversation", "by the conversation's own model"
        CHOSEN_MODEL = "chosen", "by the title model chosen below"
        OFF = "off", "off (keep the first words of the first message)"

    titles = models.CharField(
        "automatic titles",
        max_length=12,
        choices=Titles.choices,
        default=Titles.CONVERSATION_MODEL,
        help_text="Each title is one short upstream call, metered and counted against the "
        "user's quota like a reply.",
    )
    title_model = models.ForeignKey(
        "providers.Model",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A small, cheap model. If it is unavailable, the conversation's model is used.",
    )

    class Meta:
        verbose_name = verbose_name_plural = "site settings"

    def __str__(self):
        return "Site settings"

    @classmethod
    def load(cls) -> "SiteSettings":
        return cls.objects.get_or_create(pk=1)[0]
