"""What an operator can watch, in Prometheus's terms (served by chatsite/health.py).

Each daphne process counts its own; Prometheus scrapes each process. Nothing
here holds message text or user data: counts, durations, error kinds and
provider names.
"""

from prometheus_client import Counter, Gauge, Histogram

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REPLIES = Counter("chat_replies_total", "Replies that ended, by status.", ["status"])
TOKENS = Counter("chat_tokens_relayed_total", "Reply tokens relayed to the page.")
TTFT = Histogram(
    "chat_time_to_first_token_seconds", "From a reply's start to its first text.", buckets=SECONDS
)
RELAY_ADDED = Histogram(
    "chat_relay_added_seconds",
    "From the first text arriving from upstream to its first frame being published.",
    buckets=SECONDS,
)
FRAME_GAP = Histogram(
    "chat_inter_frame_gap_seconds", "Between one reply's published frames.", buckets=SECONDS
)
UPSTREAM_ERRORS = Counter(
    "chat_upstream_errors_total", "Replies that failed upstream, by kind.", ["kind", "provider"]
)
QUOTA_REFUSALS = Counter("chat_quota_refusals_total", "Sends refused by a quota.")
LOOP_LAG = Histogram(
    "chat_event_loop_lag_seconds", "How late the event loop runs a timer.", buckets=SECONDS
)
ACTIVE_STREAMS = Gauge("chat_active_streams", "Replies being written in this process.")
OPEN_SOCKETS = Gauge("chat_open_sockets", "Chat websockets open on this process.")
BATCH_SECONDS = Gauge(
    "chat_stream_batch_seconds", "How long replies gather text per frame now (adaptive)."
)
