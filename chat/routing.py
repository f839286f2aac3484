from django.urls import path

from chat.live import consumer

websocket_urlpatterns = [
    path("ws/chat/<uuid:conversation_id>/", consumer.ChatConsumer.as_asgi()),
]
