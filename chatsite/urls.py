from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from chat.governance import usage

urlpatterns = [
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("admin/usage/", usage.dashboard, name="usage_dashboard"),
    path("admin/", admin.site.urls),
    path("accounts/", include("chat.accounts.urls")),
    path("", include("chat.urls")),
]
