from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from chat.api import views as api
from chat.governance import usage
from chatsite import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("v1/models", api.models, name="api_models"),
    path("v1/chat/completions", api.chat_completions, name="api_chat_completions"),
    path("admin/usage/", usage.dashboard, name="usage_dashboard"),
    path("admin/", admin.site.urls),
    path("accounts/", include("chat.accounts.urls")),
    path("", include("chat.urls")),
]
