"""A deactivated account loses its sockets and running replies within seconds,
however it was deactivated (admin action, change form, shell)."""

from django.contrib.auth import get_user_model
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from chat.accounts.sessions import end_live_sessions_sync

User = get_user_model()


@receiver(pre_save, sender=User)
def remember_active(sender, instance, **kwargs):
    if instance.pk:
        instance._was_active = (
            User.objects.filter(pk=instance.pk).values_list("is_active", flat=True).first()
        )


@receiver(post_save, sender=User)
def end_sessions_of_deactivated(sender, instance, created, **kwargs):
    if not created and getattr(instance, "_was_active", False) and not instance.is_active:
        end_live_sessions_sync(instance.pk)
