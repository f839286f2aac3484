from django.core.management.base import BaseCommand

from providers import catalog


class Command(BaseCommand):
    help = "Install the known providers and models (safe to run again: only adds what is missing)."

    def handle(self, *args, **options):
        result = catalog.install()
        self.stdout.write(
            f"Added {result.providers_added} providers and {result.models_added} models."
        )
        for provider in catalog.Provider.objects.order_by("name"):
            state = "enabled" if provider.usable else "disabled (add its key in the admin)"
            self.stdout.write(f"  {provider.name}: {provider.models.count()} models, {state}")
