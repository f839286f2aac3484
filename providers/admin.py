"""Admin for providers and models: write-only keys, test, sync, bulk enable."""

import logging

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import Count
from django.utils.html import format_html

from providers import sync
from providers.base import ProviderError
from providers.crypto import UndecryptableKeyError
from providers.models import Model, Provider


def _https_urls(field, **kwargs):
    """Bare host names in URL fields mean https (Django 6's default, without the warning)."""
    if isinstance(field, models.URLField):
        kwargs["assume_scheme"] = "https"
    return field.formfield(**kwargs)


class ProviderForm(forms.ModelForm):
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: it is stored encrypted and never shown again. "
        "Leave blank to keep the current key.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored key.")

    class Meta:
        model = Provider
        formfield_callback = _https_urls
        fields = (
            "name",
            "wire_format",
            "base_url",
            "enabled",
            "api_key_env",
            "requires_key",
            "account_id",
            "account_id_env",
            "connect_timeout",
            "read_timeout",
            "total_timeout",
            "send_usage_option",
            "extra_headers",
        )

    def save(self, commit=True):
        provider = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            provider.set_api_key("")
        elif self.cleaned_data.get("api_key"):
            provider.set_api_key(self.cleaned_data["api_key"])
        if commit:
            provider.save()
        return provider


log = logging.getLogger(__name__)


def log_each(modeladmin, request, queryset, message: str):
    """Bulk actions change rows with one query; the audit log still gets one entry per row."""
    for obj in queryset:
        modeladmin.log_change(request, obj, message)


def _report_error(modeladmin, request, provider, error, action: str):
    """Tell the admin what was called and what came back; the log gets the same line."""
    text = error.for_admin() if isinstance(error, ProviderError) else str(error)
    log.warning("provider %r: %s failed: %s", provider.name, action, text)
    modeladmin.message_user(request, f"{provider.name}: {text}", messages.ERROR)


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("name", "wire_format", "base_url", "enabled", "key_status", "model_count")
    list_filter = ("wire_format", "enabled")
    search_fields = ("name", "base_url")
    actions = ("test_connection", "sync_models", "enable", "disable")
    fieldsets = (
        (None, {"fields": ("name", "wire_format", "base_url", "enabled")}),
        (
            "Credentials",
            {
                "fields": (
                    "api_key",
                    "clear_api_key",
                    "api_key_env",
                    "requires_key",
                    "account_id",
                    "account_id_env",
                )
            },
        ),
        (
            "Connection",
            {
                "fields": (
                    "connect_timeout",
                    "read_timeout",
                    "total_timeout",
                    "send_usage_option",
                    "extra_headers",
                )
            },
        ),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_models=Count("models"))

    @admin.display(description="API key")
    def key_status(self, provider):
        if provider.api_key_encrypted:
            return "stored"
        if provider.has_key:
            return f"from ${provider.api_key_env}"
        return "not needed" if not provider.requires_key else "missing"

    @admin.display(description="Models", ordering="n_models")
    def model_count(self, provider):
        return format_html(
            '<a href="../model/?provider__id__exact={}">{}</a>', provider.pk, provider.n_models
        )

    @admin.action(description="Test connection")
    def test_connection(self, request, queryset):
        for provider in queryset:
            try:
                latency, count = sync.check_connection(provider)
            except (ProviderError, UndecryptableKeyError) as error:
                _report_error(self, request, provider, error, "test connection")
            else:
                self.message_user(
                    request, f"{provider.name}: OK in {latency:.0f} ms, {count} models listed."
                )

    @admin.action(description="Sync models (new ones arrive disabled)")
    def sync_models(self, request, queryset):
        for provider in queryset:
            try:
                result = sync.sync_models(provider)
            except (ProviderError, UndecryptableKeyError) as error:
                _report_error(self, request, provider, error, "sync models")
            else:
                self.log_change(request, provider, f"Synced models: {result.added} new.")
                self.message_user(
                    request,
                    f"{provider.name}: {result.added} new (disabled), "
                    f"{result.flagged_missing} no longer listed, {result.found_again} back.",
                )

    @admin.action(description="Enable")
    def enable(self, request, queryset):
        log_each(self, request, queryset, "Enabled.")
        self.message_user(request, f"Enabled {queryset.update(enabled=True)} providers.")

    @admin.action(description="Disable")
    def disable(self, request, queryset):
        log_each(self, request, queryset, "Disabled.")
        self.message_user(request, f"Disabled {queryset.update(enabled=False)} providers.")


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = (
        "display_name",
        "provider",
        "remote_id",
        "enabled",
        "missing_upstream",
        "context_window",
        "price_input_per_mtok",
        "price_output_per_mtok",
    )
    list_filter = ("enabled", "missing_upstream", "provider", "provider__wire_format")
    list_select_related = ("provider",)
    search_fields = ("display_name", "remote_id")
    filter_horizontal = ("allowed_groups",)
    actions = ("enable", "disable")
    readonly_fields = ("missing_upstream",)

    @admin.action(description="Enable")
    def enable(self, request, queryset):
        log_each(self, request, queryset, "Enabled.")
        self.message_user(request, f"Enabled {queryset.update(enabled=True)} models.")

    @admin.action(description="Disable")
    def disable(self, request, queryset):
        log_each(self, request, queryset, "Disabled.")
        self.message_user(request, f"Disabled {queryset.update(enabled=False)} models.")
