"""The providers app's front door: pick the wire format, build the Endpoint.

Callers never see which wire format a model speaks:

    async for event in client.stream(endpoint, request): ...

`endpoint_for(model)` reads the ORM (decrypting the key) and must run in sync
code or through sync_to_async; the returned Endpoint is plain data.
"""

from dataclasses import replace
from types import ModuleType

from providers import llamacpp, openai, prompt_formats, reasoning, workers_ai
from providers.base import ChatRequest, Endpoint

WIRE_FORMATS: dict[str, ModuleType] = {
    "openai": openai,
    "llamacpp": llamacpp,
    "workers_ai": workers_ai,
}


def endpoint_for(provider, model=None) -> Endpoint:
    return Endpoint(
        wire_format=provider.wire_format,
        base_url=(
            model.endpoint_url if model is not None and model.endpoint_url else provider.base_url
        ),
        api_key=provider.api_key(),
        account_id=provider.resolved_account_id(),
        headers={str(k): str(v) for k, v in (provider.extra_headers or {}).items()},
        connect_timeout=provider.connect_timeout,
        read_timeout=provider.read_timeout,
        total_timeout=provider.total_timeout,
        send_usage_option=provider.send_usage_option,
    )


def stream(endpoint: Endpoint, request: ChatRequest):
    """Text, reasoning, usage and finish events: every backend's thinking comes out
    as ReasoningDelta, wherever it was on the wire."""
    events = WIRE_FORMATS[endpoint.wire_format].stream(endpoint, request)
    return reasoning.normalise(events, opened=_prompt_opens_thinking(endpoint, request))


def _prompt_opens_thinking(endpoint: Endpoint, request: ChatRequest) -> bool:
    raw = endpoint.wire_format == "llamacpp" or request.raw_prompt
    # A continued reply's prompt ends inside its answer, not in an opened thinking block.
    return raw and not request.continues and prompt_formats.opens_thinking(request.prompt_format)


async def complete(endpoint: Endpoint, request: ChatRequest):
    """A whole reply, its thinking left out."""
    completion = await WIRE_FORMATS[endpoint.wire_format].complete(endpoint, request)
    opened = _prompt_opens_thinking(endpoint, request)
    return replace(completion, text=reasoning.answer_only(completion.text, opened))


async def discover(endpoint: Endpoint):
    return await WIRE_FORMATS[endpoint.wire_format].discover(endpoint)
