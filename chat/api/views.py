"""The OpenAI-compatible endpoints: GET /v1/models and POST /v1/chat/completions.

Stateless: no conversation ids, and no conversation is read or written. The one
way in is `Authorization: Bearer <key>` (chat.api.keys): session cookies and
other headers (x-api-key) are never read here, and CSRF does not apply. Every
refusal is an OpenAI-shaped error body: {"error": {"message", "type", "param",
"code"}}.
"""

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponseNotAllowed, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from chat.api import admission, completions, keys
from chat.api.request import BadRequest, parse
from chat.db import db_async
from providers.base import ProviderError

log = logging.getLogger(__name__)

# Upstream error kinds (providers.base) as HTTP statuses of this API.
UPSTREAM_STATUS = {
    "auth": 502, "rate_limited": 429, "bad_request": 400, "context_too_long": 400,
    "unavailable": 502, "timeout": 504, "malformed": 502,
}  # fmt: skip


def error(status: int, message: str, kind: str, code=None, param=None, retry_after=None):
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    response = JsonResponse(body, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


async def _key(request):
    """The request's key, or the error response that refuses it."""
    try:
        return await db_async(keys.authenticate)(request.headers.get("Authorization")), None
    except keys.Unauthorized as refusal:
        return None, error(401, str(refusal), "invalid_request_error", "invalid_api_key")
    except keys.Forbidden as refusal:
        return None, error(403, str(refusal), "permission_error", "api_not_allowed")


@csrf_exempt
async def models(request):
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    key, refused = await _key(request)
    if refused:
        return refused
    listed = await db_async(admission.models_for)(key)
    data = [
        {"id": admission.api_id(m), "object": "model", "created": int(m.created.timestamp()),
         "owned_by": m.provider.name}
        for m in listed
    ]  # fmt: skip
    return JsonResponse({"object": "list", "data": data})


def _upstream_error(failure: ProviderError):
    status = UPSTREAM_STATUS.get(failure.kind, 502)
    retry_after = round(failure.retry_after or 1) if status == 429 else None
    return error(status, failure.message, "upstream_error", failure.kind, retry_after=retry_after)


async def _admit(request):
    """The admitted plan and the call, or the error response that refuses them."""
    key, refused = await _key(request)
    if refused:
        return None, None, refused
    try:
        call = parse(request.body)
        return await db_async(admission.admit)(key, call), call, None
    except BadRequest as bad:
        return None, None, error(400, str(bad), "invalid_request_error", None, bad.param)
    except RequestDataTooBig:
        return None, None, error(413, "The request body is too large.", "invalid_request_error")
    except admission.ModelNotFound as missing:
        return None, None, error(404, str(missing), "invalid_request_error", "model_not_found")
    except admission.ContextTooLong as long:
        return None, None, error(400, str(long), "invalid_request_error", "context_length_exceeded")
    except admission.TooMany as many:
        refusal = error(
            429, str(many), "rate_limit_error", "quota_exceeded", retry_after=many.retry_after
        )
        return None, None, refusal


@csrf_exempt
async def chat_completions(request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    plan, call, refused = await _admit(request)
    if refused:
        return refused
    try:
        if not call.stream:
            return JsonResponse(await completions.whole(plan))
        streamed = completions.Streamed(plan, call.include_usage)
        await streamed.start()
    except ProviderError as failure:
        return _upstream_error(failure)
    response = StreamingHttpResponse(streamed.chunks(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each chunk on at once
    return response
