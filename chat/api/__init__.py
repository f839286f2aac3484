"""Personal API keys and the OpenAI-compatible API (/v1/), behind the web chat's own
model access, quotas and ledger. keys.py: keys and the one way to authenticate;
request.py: reading a request; admission.py: the checks and the ledger row;
completions.py: running it, streamed or whole; views.py: the endpoints;
pages.py: the key management page.
"""
