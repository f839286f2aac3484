from django import template

from chat.markdown.whole import render_markdown

register = template.Library()


@register.filter
def markdown(text: str):
    """Model output as sanitized HTML."""
    return render_markdown(text or "")
