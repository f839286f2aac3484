"""Cloudflare Workers AI: POST {base}/accounts/{account_id}/ai/run/{model}.

Scoped prompts (`messages`) by default; models marked raw get `prompt` rendered
with their prompt format plus `raw: true`. Streams are SSE `{"response": ...}`
ending with [DONE]; newer models add a `usage` object near the end, and some
stream OpenAI-shaped `choices[0].delta` chunks (with `reasoning_content`). A
non-streamed reply is `{"result": {"response": ...}, "success": true, "errors": []}`.
"""

from collections.abc import AsyncIterator
from contextlib import aclosing

from providers import continuation, http, reasoning
from providers.base import (
    ChatRequest,
    Completion,
    DiscoveredModel,
    Endpoint,
    Finish,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    Usage,
)
from providers.prompt_formats import render


def _account_url(endpoint: Endpoint, path: str) -> str:
    if not endpoint.account_id:
        raise ProviderError("bad_request", "no Cloudflare account id configured")
    return f"{endpoint.base_url.rstrip('/')}/accounts/{endpoint.account_id}{path}"


def _body(request: ChatRequest, stream: bool) -> dict:
    body: dict = {"stream": stream, **request.params}
    if request.raw_prompt:
        body["prompt"], _ = render(
            request.prompt_format or "chatml", request.messages, open_last=request.continues
        )
        body["raw"] = True
    else:
        body["messages"], _ = continuation.chat_messages(request, can_prefill=False)
    if request.max_tokens:
        body["max_tokens"] = request.max_tokens
    return body


def _usage(raw) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage.reported(raw.get("prompt_tokens"), raw.get("completion_tokens"))


def _is_choice_list(choices) -> bool:
    return isinstance(choices, list) and bool(choices) and isinstance(choices[0], dict)


async def stream(endpoint: Endpoint, request: ChatRequest) -> AsyncIterator:
    deadline = http.deadline_for(endpoint)
    url = _account_url(endpoint, f"/ai/run/{request.model}")
    done, any_text = False, False
    async with http.post_stream(endpoint, url, _body(request, True), deadline) as response:
        async with aclosing(http.json_events(response, deadline)) as events:
            async for event in events:
                if event is http.DONE:
                    done = True
                    break
                # Newer models stream OpenAI-shaped chunks instead of `response`.
                choices = event.get("choices")
                delta = (choices[0].get("delta") or {}) if _is_choice_list(choices) else event
                if thought := reasoning.from_fields(delta):
                    any_text = True
                    yield ReasoningDelta(thought)
                text = delta.get("response", delta.get("content"))
                if isinstance(text, str) and text:
                    any_text = True
                    yield TextDelta(text)
                usage = _usage(event.get("usage"))
                if usage:
                    yield usage
    if not done:
        if any_text:
            raise ProviderError("unavailable", "stream ended before the reply finished")
        raise ProviderError("malformed", "empty stream")
    yield Finish("stop")


async def complete(endpoint: Endpoint, request: ChatRequest) -> Completion:
    url = _account_url(endpoint, f"/ai/run/{request.model}")
    payload = await http.post_json(endpoint, url, _body(request, False))
    if error := http.error_in(payload):
        raise error
    if not isinstance(payload, dict) or payload.get("success") is False:
        raise ProviderError("malformed", "unsuccessful reply without errors")
    result = payload.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("response"), str):
        raise ProviderError("malformed", "no result.response")
    return Completion(result["response"], _usage(result.get("usage")) or Usage(), "stop")


async def discover(endpoint: Endpoint) -> list[DiscoveredModel]:
    url = _account_url(endpoint, "/ai/models/search")
    payload = await http.get_json(endpoint, url, {"task": "Text Generation", "per_page": 500})
    items = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        raise ProviderError("malformed", "model search has no result")
    return [
        DiscoveredModel(str(item["name"]))
        for item in items
        if isinstance(item, dict) and item.get("name")
    ]
