"""The audit log is Django admin's own LogEntry (who, what, when), shown read-only
in the admin. Admin actions that change rows in bulk log each row here too,
since a queryset update would otherwise leave no trace."""

from django.contrib import admin
from django.contrib.admin.models import LogEntry


def log_each(modeladmin, request, queryset, message: str):
    for obj in queryset:
        modeladmin.log_change(request, obj, message)


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
