from django.urls import path

from chat import views
from chat.api import pages
from chat.governance import usage

urlpatterns = [
    path("", views.home, name="home"),
    path("c/new", views.new_chat, name="new_chat"),
    path("c/import", views.import_conversation, name="import_conversation"),
    path("c/<uuid:conversation_id>/", views.conversation, name="conversation"),
    path("c/<uuid:conversation_id>/earlier", views.earlier_messages, name="earlier"),
    path("c/<uuid:conversation_id>/fork/<int:message_id>", views.fork, name="fork"),
    path("c/<uuid:conversation_id>/rename", views.rename, name="rename"),
    path("c/<uuid:conversation_id>/pin", views.pin, name="pin"),
    path("c/<uuid:conversation_id>/delete", views.delete, name="delete"),
    path("c/<uuid:conversation_id>/model", views.choose_model, name="choose_model"),
    path("c/<uuid:conversation_id>/settings", views.update_settings, name="settings"),
    path(
        "c/<uuid:conversation_id>/export.<str:fmt>",
        views.export_conversation,
        name="export",
    ),
    path("sidebar", views.sidebar, name="sidebar"),
    path("usage/", usage.my_usage, name="my_usage"),
    path("settings/api-keys/", pages.api_keys, name="api_keys"),
    path("settings/api-keys/<int:key_id>/revoke", pages.revoke, name="revoke_api_key"),
]
