from django import template

from chat.markdown.whole import render_markdown
from chat.models import thought_label_seconds

register = template.Library()


@register.filter
def markdown(text: str):
    """Model output as sanitized HTML."""
    return render_markdown(text or "")


@register.filter
def thought_seconds(seconds: float) -> str:
    """How long a model thought, as the thinking block's label says it."""
    return thought_label_seconds(seconds)
