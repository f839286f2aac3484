from django.contrib import admin
from django.urls import include, path

from chat import usage

urlpatterns = [
    path("admin/usage/", usage.dashboard, name="usage_dashboard"),
    path("admin/", admin.site.urls),
    path("accounts/", include("chat.account_urls")),
    path("", include("chat.urls")),
]
