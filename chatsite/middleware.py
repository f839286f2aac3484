"""Security headers not covered by Django 5.2's own middleware."""

from django.utils.decorators import sync_and_async_middleware

# No inline script, no third-party origin: model output can never run code even
# if it slipped past the sanitizer. connect-src 'self' covers ws(s) to this host.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


@sync_and_async_middleware
def ContentSecurityPolicyMiddleware(get_response):  # noqa: N802 - Django middleware naming
    from asgiref.sync import iscoroutinefunction

    def add_header(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    if iscoroutinefunction(get_response):

        async def middleware(request):
            return add_header(await get_response(request))

    else:

        def middleware(request):
            return add_header(get_response(request))

    return middleware
