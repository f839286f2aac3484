"""Conversations and their messages.

A reply is a Message row from its first moment (status `streaming`), so a
refresh, another tab or a crash never loses it.
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
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-pinned", "-updated"], name="conv_sidebar")]

    def __str__(self):
        return self.title or "New chat"

    @property
    def group(self) -> str:
        """The channel-layer group every socket on this conversation joins."""
        return f"conv.{self.id.hex}"


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
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
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
