"""What a failed Slack Web API call says, in one word, for logs and decisions.

``SlackApiError.response`` is usually an ``AsyncSlackResponse`` whose data is the JSON answer,
but a proxy or an outage can answer with HTML or plain text: the SDK then hands over a
response whose data is a string, or the raw aiohttp response. Those become ``http_<status>``.
"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

__all__ = ["error_code"]


def error_code(exc: SlackApiError) -> str:
    response = exc.response
    data = getattr(response, "data", None)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    return f"http_{status}" if status else "unknown"
