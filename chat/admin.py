"""Admin for people and usage: approve, deactivate, make admin, quotas, the ledger,
site settings, and the audit log.

The audit log is Django admin's own LogEntry (who, what, when), shown read-only.
Admin actions that change rows in bulk log each row too (providers.admin.log_each),
since a queryset update would otherwise leave no trace."""

from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db.models import Sum
from django.shortcuts import redirect

from chat.api import keys
from chat.models import ApiKey, Quota, SiteSettings, UsageRecord
from providers.admin import log_each

User = get_user_model()


class UserQuotaInline(admin.StackedInline):
    model = Quota
    fk_name = "user"
    fields = ("requests_per_minute", "tokens_per_day", "cost_per_month", "max_concurrent")
    extra = 0
    max_num = 1
    verbose_name = "quota (overrides the user's groups; admins are exempt without one)"


class GroupQuotaInline(UserQuotaInline):
    fk_name = "group"
    verbose_name = "default quota for members"


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class ChatUserAdmin(UserAdmin):
    inlines = [UserQuotaInline]
    list_display = ("username", "is_active", "is_staff", "date_joined", "last_login", "cost_total")
    list_filter = ("is_active", "is_staff", "groups")
    actions = ("approve", "deactivate", "make_admin")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(spent=Sum("usage_records__cost"))

    @admin.display(description="spent (USD)", ordering="spent")
    def cost_total(self, user):
        return f"{user.spent or 0:.4f}"

    @admin.action(description="Approve (activate) selected accounts")
    def approve(self, request, queryset):
        pending = queryset.filter(is_active=False)
        log_each(self, request, pending, "Approved the account.")
        self.message_user(request, f"Approved {pending.update(is_active=True)} accounts.")

    @admin.action(description="Deactivate (ends their sessions and replies)")
    def deactivate(self, request, queryset):
        targets = queryset.filter(is_active=True).exclude(pk=request.user.pk)
        count = 0
        for user in targets:
            user.is_active = False
            user.save(update_fields=["is_active"])  # the signal ends live sessions
            self.log_change(request, user, "Deactivated the account.")
            count += 1
        level = messages.SUCCESS if count else messages.WARNING
        self.message_user(request, f"Deactivated {count} accounts.", level)

    @admin.action(description="Make admin")
    def make_admin(self, request, queryset):
        log_each(self, request, queryset, "Made an admin.")
        updated = queryset.update(is_staff=True, is_superuser=True)
        self.message_user(request, f"{updated} accounts are now admins.")


@admin.register(Group)
class ChatGroupAdmin(GroupAdmin):
    inlines = [GroupQuotaInline]


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = (
        "created",
        "user",
        "model_name",
        "provider_name",
        "prompt_tokens",
        "completion_tokens",
        "tokens_estimated",
        "cost",
        "cost_source",
        "latency_ms",
        "status",
        "purpose",
        "api_key",
    )
    list_filter = ("status", "purpose", "cost_source", "provider_name", "model_name")
    search_fields = ("user__username", "model_name")
    date_hierarchy = "created"
    list_select_related = ("user",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Every key's owner, prefix and last use; keys are made by their owners, and
    revoked here or by them. Who may use the API: the "Can create and use personal
    API keys" permission, on a group (Groups) or a person."""

    list_display = ("prefix", "name", "user", "created", "last_used", "expires", "revoked")
    list_filter = ("revoked", "expires")
    search_fields = ("prefix", "name", "user__username")
    list_select_related = ("user",)
    readonly_fields = ("user", "name", "prefix", "allowed_models", "created", "last_used",
                       "expires", "revoked")  # fmt: skip
    exclude = ("digest",)
    actions = ("revoke",)

    @admin.action(description="Revoke")
    def revoke(self, request, queryset):
        for key in queryset.filter(revoked__isnull=True):
            keys.revoke(request.user, key)
        self.message_user(request, "Revoked.")

    def has_add_permission(self, request):
        return False


@admin.register(SiteSettings)
class SiteSettingsAdmin(admin.ModelAdmin):
    """One row; the list goes straight to it."""

    fields = ("titles", "title_model")

    def has_add_permission(self, request):
        return not SiteSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        site = SiteSettings.load()
        return redirect("admin:chat_sitesettings_change", site.pk)


@admin.register(LogEntry)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ("action_time", "user", "content_type", "object_repr", "action_flag", "change")
    list_filter = ("action_flag", "content_type", "user")
    search_fields = ("object_repr", "change_message", "user__username")
    date_hierarchy = "action_time"

    @admin.display(description="what changed")
    def change(self, entry):
        return entry.get_change_message()

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
