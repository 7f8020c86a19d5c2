"""A loopback fake Slack for end-to-end tests: the Web API methods the bot calls, the file
upload URL, a Socket Mode websocket, ``response_url`` endpoints, and a signed HTTP-mode client.

It speaks the protocol the real ``slack_sdk``/``slack_bolt`` expect: HTTP 200 with
``"ok": true`` (or ``"ok": false`` and an ``error``), arguments merged from the query string,
the form and the JSON body, the token checked like Slack (``invalid_auth``), ``not_in_channel``
for channels the bot has not joined, scriptable ``429 ratelimited`` answers with an integer
``Retry-After``, and a websocket that sends ``hello`` and envelopes, records acks and answers
pings.

Socket Mode allows an app up to ``MAX_CONNECTIONS`` (10) connections at once (one more is told
``too_many_websockets`` and closed), and Slack sends each envelope to one of them only; the
fake takes them in turn (Slack picks any), and records which connection got each envelope and
which sent each ack (connections are numbered from 1 in the order they opened).

Everything is recorded; tests wait on conditions (``await slack.wait_for(...)``), never sleep::

    async with FakeSlack() as slack:
        ...start the bot with SLACK_API_BASE_URL=slack.base_url...
        await slack.wait_connected()
        envelope = await slack.slash_command("a red fox", user="U1", channel="C1")
        ack = await slack.wait_ack(envelope)
        upload = await slack.wait_for(lambda: slack.uploads_in("C1"))
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from aiohttp import ClientSession, WSMsgType, web

from tests.fakes.loopback import serve_loopback
from tests.fakes.observer import Observed

__all__ = [
    "Ack",
    "ApiCall",
    "Envelope",
    "FakeSlack",
    "PostedMessage",
    "ResponsePost",
    "Upload",
    "sign",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_CONNECTIONS = 10

# Methods whose channel argument must be a conversation the bot is a member of.
_CHANNEL_METHODS = {
    "chat.postMessage": "channel",
    "chat.postEphemeral": "channel",
    "chat.update": "channel",
    "chat.delete": "channel",
    "files.completeUploadExternal": "channel_id",
}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 of ``v0:{ts}:{body}``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One Web API request as the fake saw it, and what it answered."""

    method: str
    args: Mapping[str, Any]
    token: str | None
    status: int
    answer: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.answer.get("ok") is True

    @property
    def error(self) -> str | None:
        error = self.answer.get("error")
        return str(error) if error is not None else None


@dataclass(slots=True)
class Upload:
    """A file from ``files.getUploadURLExternal`` to ``files.completeUploadExternal``."""

    file_id: str
    filename: str
    length: int
    alt_txt: str | None = None
    data: bytes | None = None
    title: str | None = None
    channel_id: str | None = None
    initial_comment: str | None = None
    thread_ts: str | None = None
    completed: bool = False
    share_ts: str | None = None


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """A message the bot posted (``chat.postMessage``) or an ephemeral one (``user`` set)."""

    method: str
    channel: str
    text: str
    blocks: tuple[Mapping[str, Any], ...]
    thread_ts: str | None
    ts: str
    user: str | None = None

    def buttons(self) -> list[Mapping[str, Any]]:
        return _buttons(self.blocks)


@dataclass(frozen=True, slots=True)
class ResponsePost:
    """A message posted to a ``response_url``."""

    key: str
    body: Mapping[str, Any]

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))

    @property
    def ephemeral(self) -> bool:
        return bool(self.body.get("response_type", "ephemeral") == "ephemeral")

    def buttons(self) -> list[Mapping[str, Any]]:
        return _buttons(self.body.get("blocks") or [])


@dataclass(frozen=True, slots=True)
class Ack:
    envelope_id: str
    payload: Mapping[str, Any] | None
    at: float
    connection: int = 0


@dataclass(frozen=True, slots=True)
class Envelope:
    """A Socket Mode envelope the fake sent; ``sent_at`` is ``time.monotonic()``."""

    envelope_id: str
    type: str
    payload: Mapping[str, Any]
    sent_at: float
    retry_attempt: int | None = None
    connection: int = 0

    @property
    def response_url_key(self) -> str | None:
        url = self.payload.get("response_url")
        return str(url).rsplit("/", 1)[-1] if url else None


@dataclass(slots=True)
class _Failure:
    status: int
    error: str
    retry_after: int | None
    times: int
    channel: str | None = None
    # A proxy's plain-text error page in front of Slack, instead of Slack's JSON.
    page: str | None = None


@dataclass(slots=True)
class _User:
    id: str
    name: str
    is_admin: bool = False
    is_owner: bool = False


class FakeSlack(Observed):
    """See the module docstring. Defaults: team ``T1``, bot user ``UBOT``, the bot is a member
    of ``C1`` only; ``users`` are added with ``add_user``."""

    name = "fake Slack"
    wait_timeout = 20.0

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-fake-bot-token",
        app_token: str = "xapp-fake-app-token",
        team_id: str = "T1",
        bot_user_id: str = "UBOT",
        member_channels: tuple[str, ...] = ("C1",),
    ) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.member_channels: set[str] = set(member_channels)
        self.users: dict[str, _User] = {}
        self.api_calls: list[ApiCall] = []
        self.uploads: dict[str, Upload] = {}
        self.messages: list[PostedMessage] = []
        self.responses: list[ResponsePost] = []
        self.acks: list[Ack] = []
        self.envelopes: list[Envelope] = []
        self.connections = 0
        self.disconnects = 0  # Socket Mode connections the bot (or the fake) closed
        self._failures: dict[str, list[_Failure]] = {}
        self._ids = itertools.count(1)
        # Open Socket Mode connections, oldest first, each with its number.
        self._sockets: dict[web.WebSocketResponse, int] = {}
        self._turn = itertools.count()
        self._ws_tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._http: ClientSession | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> FakeSlack:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/v1/{file_id}", self._upload)
        app.router.add_get("/link/", self._socket)
        # Slack's own shape: https://hooks.slack.com/commands/T123/456/<secret> (or actions/).
        app.router.add_post("/{kind:commands|actions}/{team}/{n}/{key}", self._respond)
        self._runner, self.port = await serve_loopback(app)
        self._http = ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop_watching()
        if self._http is not None:
            await self._http.close()
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """For ``SLACK_API_BASE_URL``."""
        return f"{self.url}/api/"

    def env(self) -> dict[str, str]:
        """The bot's Slack variables for Socket Mode against this fake."""
        return {
            "SLACK_BOT_TOKEN": self.bot_token,
            "SLACK_APP_TOKEN": self.app_token,
            "SLACK_API_BASE_URL": self.base_url,
        }

    # -- configuration --------------------------------------------------------------------

    def add_user(
        self, user_id: str, name: str = "", *, is_admin: bool = False, is_owner: bool = False
    ) -> None:
        self.users[user_id] = _User(user_id, name or user_id.lower(), is_admin, is_owner)

    def fail(
        self,
        method: str,
        *,
        error: str = "ratelimited",
        status: int = 429,
        retry_after: int | None = 1,
        times: int = 1,
        channel: str | None = None,
        page: str | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with ``error`` (default: a 429
        ``ratelimited`` with ``Retry-After: 1``). ``method`` may be ``"upload"`` for the upload
        URL. With ``channel``, only calls about that channel fail. With ``page``, the answer is
        that text instead of JSON, as a proxy's error page (``upstream connect error``) is."""
        failure = _Failure(status, error, retry_after, times, channel, page)
        self._failures.setdefault(method, []).append(failure)

    # -- what was received ---------------------------------------------------------------

    def calls(self, method: str) -> list[ApiCall]:
        return [c for c in self.api_calls if c.method == method]

    def uploads_in(self, channel: str, *, thread_ts: str | None = None) -> list[Upload]:
        """Completed uploads shared into ``channel`` (and ``thread_ts`` when given)."""
        return [
            u
            for u in self.uploads.values()
            if u.completed
            and u.channel_id == channel
            and (thread_ts is None or u.thread_ts == thread_ts)
        ]

    def posted(self, channel: str | None = None) -> list[PostedMessage]:
        """Visible messages from ``chat.postMessage``."""
        return [
            m for m in self.messages if m.user is None and (channel is None or m.channel == channel)
        ]

    def ephemeral_to(self, user: str) -> list[str]:
        """Every ephemeral text ``user`` was shown: ``chat.postEphemeral`` and response_url."""
        texts = [m.text for m in self.messages if m.user == user]
        keys = {e.response_url_key for e in self.envelopes if _envelope_user(e) == user}
        texts.extend(r.text for r in self.responses if r.key in keys and r.ephemeral)
        return texts

    def responses_to(self, envelope: Envelope) -> list[ResponsePost]:
        return [r for r in self.responses if r.key == envelope.response_url_key]

    def unacked(self) -> list[Envelope]:
        """Envelopes without an ack (Bolt never acks a request no listener matched)."""
        acked = {a.envelope_id for a in self.acks}
        return [e for e in self.envelopes if e.envelope_id not in acked]

    async def wait_all_acked(self) -> None:
        await self.wait_for(lambda: not self.unacked())

    def ack_for(self, envelope: Envelope) -> Ack | None:
        return next((a for a in self.acks if a.envelope_id == envelope.envelope_id), None)

    @property
    def connected(self) -> bool:
        return self.open_connections > 0

    @property
    def open_connections(self) -> int:
        return sum(not ws.closed for ws in self._sockets)

    async def wait_connected(self, *, connections: int = 1) -> None:
        await self.wait_for(lambda: self.connections >= connections and self.connected)

    async def wait_ack(self, envelope: Envelope, *, timeout: float = 20.0) -> Ack:
        return await self.wait_for(lambda: self.ack_for(envelope), timeout=timeout)

    def summary(self) -> str:
        lines = [f"  {c.method} -> {c.status} {c.error or 'ok'}" for c in self.api_calls]
        lines += [f"  ack {a.envelope_id}" for a in self.acks]
        lines += [f"  response_url {r.key}: {r.text!r}" for r in self.responses]
        lines += [f"  {m.method} {m.channel} to={m.user}: {m.text!r}" for m in self.messages]
        return "\n".join(lines) or "  nothing"

    # -- Socket Mode: envelopes ------------------------------------------------------------

    def slash_payload(
        self, text: str, *, user: str = "U1", channel: str = "C1", command: str = "/imagine"
    ) -> dict[str, Any]:
        """The fields of a slash command (form-encoded in HTTP mode)."""
        n = next(self._ids)
        return {
            "token": "verification-token-unused",
            "team_id": self.team_id,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": channel.lower(),
            "user_id": user,
            "user_name": self._user_name(user),
            "command": command,
            "text": text,
            "api_app_id": "A1",
            "is_enterprise_install": "false",
            "response_url": self._response_url("commands", n),
            "trigger_id": f"{n}.{n}.trigger{n}",
        }

    def mention_payload(
        self,
        text: str,
        *,
        user: str = "U1",
        channel: str = "C1",
        thread_ts: str | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        n = next(self._ids)
        ts = f"{1700000000 + n}.{n:06d}"
        event: dict[str, Any] = {
            "type": "app_mention",
            "user": user,
            "text": f"<@{self.bot_user_id}> {text}",
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        return {
            "token": "verification-token-unused",
            "team_id": self.team_id,
            "api_app_id": "A1",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{n:08d}",
            "event_time": 1700000000 + n,
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }

    def click_payload(
        self, button: Mapping[str, Any], message: PostedMessage, *, user: str = "U1"
    ) -> dict[str, Any]:
        """A ``block_actions`` payload for ``user`` clicking ``button`` on ``message``."""
        n = next(self._ids)
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        }
        posted: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": "B1",
            "ts": message.ts,
            "text": message.text,
            "blocks": list(message.blocks),
        }
        if message.thread_ts is not None:
            container["thread_ts"] = message.thread_ts
            posted["thread_ts"] = message.thread_ts
        return {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": self._user_name(user),
                "name": self._user_name(user),
                "team_id": self.team_id,
            },
            "api_app_id": "A1",
            "token": "verification-token-unused",
            "container": container,
            "trigger_id": f"{n}.{n}.click{n}",
            "team": {"id": self.team_id, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": message.channel, "name": message.channel.lower()},
            "message": posted,
            "state": {"values": {}},
            "response_url": self._response_url("actions", n),
            "actions": [
                {
                    "action_id": button["action_id"],
                    "block_id": "b",
                    "text": button.get("text", {}),
                    "value": button.get("value", ""),
                    "type": "button",
                    "action_ts": f"{1700000000 + n}.000000",
                }
            ],
        }

    def note_click_payload(
        self, button: Mapping[str, Any], *, channel: str, user: str, message_ts: str = ""
    ) -> dict[str, Any]:
        """``block_actions`` for ``user`` clicking ``button`` on an ephemeral message (a
        ``response_url`` note or a ``chat.postEphemeral`` one): Slack marks the container
        ephemeral and sends no ``message``."""
        n = next(self._ids)
        return {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": self._user_name(user),
                "name": self._user_name(user),
                "team_id": self.team_id,
            },
            "api_app_id": "A1",
            "token": "verification-token-unused",
            "container": {
                "type": "message",
                "message_ts": message_ts or f"{1700000000 + n}.000000",
                "channel_id": channel,
                "is_ephemeral": True,
            },
            "trigger_id": f"{n}.{n}.click{n}",
            "team": {"id": self.team_id, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": channel.lower()},
            "state": {"values": {}},
            "response_url": self._response_url("actions", n),
            "actions": [
                {
                    "action_id": button["action_id"],
                    "block_id": "b",
                    "text": button.get("text", {}),
                    "value": button.get("value", ""),
                    "type": "button",
                    "action_ts": f"{1700000000 + n}.000000",
                }
            ],
        }

    async def click_note(
        self, button: Mapping[str, Any], *, channel: str, user: str, message_ts: str = ""
    ) -> Envelope:
        payload = self.note_click_payload(button, channel=channel, user=user, message_ts=message_ts)
        return await self.send("interactive", payload)

    async def slash_command(self, text: str, **kwargs: Any) -> Envelope:
        return await self.send("slash_commands", self.slash_payload(text, **kwargs))

    async def mention(self, text: str, **kwargs: Any) -> Envelope:
        return await self.send("events_api", self.mention_payload(text, **kwargs))

    async def click(
        self, button: Mapping[str, Any], message: PostedMessage, *, user: str = "U1"
    ) -> Envelope:
        return await self.send("interactive", self.click_payload(button, message, user=user))

    async def send(
        self,
        type_: str,
        payload: Mapping[str, Any],
        *,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        connection: int | None = None,
    ) -> Envelope:
        """Send one envelope over one open Socket Mode connection: ``connection`` (its
        number), or each in turn."""
        open_sockets = [(ws, n) for ws, n in self._sockets.items() if not ws.closed]
        if connection is not None:
            open_sockets = [(ws, n) for ws, n in open_sockets if n == connection]
        if not open_sockets:
            raise AssertionError("no Socket Mode connection; await wait_connected() first")
        ws, number = open_sockets[next(self._turn) % len(open_sockets)]
        envelope_id = f"env-{next(self._ids)}"
        message: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": type_,
            "payload": dict(payload),
            "accepts_response_payload": type_ != "events_api",
        }
        if retry_attempt is not None:
            message["retry_attempt"] = retry_attempt
            message["retry_reason"] = retry_reason or "timeout"
        envelope = Envelope(
            envelope_id, type_, dict(payload), time.monotonic(), retry_attempt, number
        )
        self.envelopes.append(envelope)
        await ws.send_str(json.dumps(message))
        return envelope

    async def redeliver(self, envelope: Envelope, *, attempt: int = 1) -> Envelope:
        """Slack's redelivery: the same payload in a new envelope with retry fields."""
        return await self.send(
            envelope.type, envelope.payload, retry_attempt=attempt, retry_reason="timeout"
        )

    # -- HTTP mode -------------------------------------------------------------------------

    async def post_signed(
        self,
        url: str,
        *,
        secret: str,
        form: Mapping[str, Any] | None = None,
        json_body: Mapping[str, Any] | None = None,
        timestamp: int | str | None = None,
    ) -> tuple[int, str, float]:
        """POST a Slack request to the bot as Slack would, signed with ``secret``; returns
        (status, body, seconds until the answer)."""
        assert self._http is not None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            content_type = "application/x-www-form-urlencoded"
        else:
            body = json.dumps(json_body or {}).encode()
            content_type = "application/json"
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sign(secret, ts, body),
        }
        started = time.monotonic()
        async with self._http.post(url, data=body, headers=headers) as response:
            text = await response.text()
            return response.status, text, time.monotonic() - started

    # -- server side -----------------------------------------------------------------------

    def _user_name(self, user_id: str) -> str:
        user = self.users.get(user_id)
        return user.name if user else user_id.lower()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        raw = await request.read()
        if request.content_type == "application/json" and raw:
            body = json.loads(raw)
            if isinstance(body, dict):
                args.update(body)
        elif raw and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            args.update(dict(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True)))
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else args.pop("token", None)
        queue = self._failures.get(method)
        if queue and queue[0].page is not None and (failure := self._scripted(method, args)):
            self.api_calls.append(ApiCall(method, args, token, failure.status, {}))
            await self._notify()
            return web.Response(status=failure.status, text=failure.page, content_type="text/plain")
        status, answer, headers = self._answer(method, args, token)
        self.api_calls.append(ApiCall(method, args, token, status, answer))
        await self._notify()
        return web.json_response(answer, status=status, headers=headers)

    def _scripted(self, method: str, args: Mapping[str, Any] | None = None) -> _Failure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        channel_arg = _CHANNEL_METHODS.get(method)
        if failure.channel is not None and (
            channel_arg is None or (args or {}).get(channel_arg) != failure.channel
        ):
            return None
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        return failure

    def _answer(
        self, method: str, args: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        failure = self._scripted(method, args)
        if failure is not None:
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(int(failure.retry_after))
            return failure.status, {"ok": False, "error": failure.error}, headers
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token != expected:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        channel_arg = _CHANNEL_METHODS.get(method)
        if channel_arg is not None and args.get(channel_arg):
            channel = str(args[channel_arg])
            if channel not in self.member_channels:
                return 200, {"ok": False, "error": "not_in_channel"}, {}
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        answer: dict[str, Any] = handler(args)
        return 200, answer, {}

    def _response_url(self, kind: str, n: int) -> str:
        return f"{self.url}/{kind}/{self.team_id}/{n}/{secrets.token_urlsafe(18)}"

    def _next_ts(self) -> str:
        n = next(self._ids)
        return f"{1800000000 + n}.{n:06d}"

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake",
            "user": "imagine-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": "B1",
            "is_enterprise_install": False,
        }

    def _m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket={next(self._ids)}"}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._post("chat.postMessage", args, user=None)

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user") or "")
        if not user:
            return {"ok": False, "error": "user_not_in_channel"}
        answer = self._post("chat.postEphemeral", args, user=user)
        return {"ok": True, "message_ts": answer["ts"]} if answer.get("ok") else answer

    def _post(self, method: str, args: dict[str, Any], *, user: str | None) -> dict[str, Any]:
        text = str(args.get("text") or "")
        blocks = _json_arg(args.get("blocks")) or []
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        thread_ts = args.get("thread_ts") or None
        self.messages.append(
            PostedMessage(
                method=method,
                channel=str(args["channel"]),
                text=text,
                blocks=tuple(blocks),
                thread_ts=str(thread_ts) if thread_ts else None,
                ts=ts,
                user=user,
            )
        )
        return {"ok": True, "channel": args["channel"], "ts": ts, "message": {"text": text}}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        """Replaces the text and blocks of a message the bot posted (same ``ts``)."""
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        for index, message in enumerate(self.messages):
            if message.channel == channel and message.ts == ts and message.user is None:
                text = str(args.get("text") or "")
                blocks = _json_arg(args.get("blocks"))
                self.messages[index] = replace(
                    message,
                    text=text or message.text,
                    blocks=tuple(blocks) if blocks is not None else message.blocks,
                )
                return {"ok": True, "channel": channel, "ts": ts, "text": text}
        return {"ok": False, "error": "message_not_found"}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts")}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user", "")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {
            "ok": True,
            "user": {
                "id": user.id,
                "team_id": self.team_id,
                "name": user.name,
                "real_name": user.name.title(),
                "is_admin": user.is_admin,
                "is_owner": user.is_owner,
                "is_bot": False,
                "profile": {"display_name": user.name, "real_name": user.name.title()},
            },
        }

    def _m_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if channel.startswith("D"):
            if channel not in self.member_channels:
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "channel": {"id": channel, "is_im": True, "user": channel[1:]}}
        if channel.startswith("G") and channel not in self.member_channels:
            return {"ok": False, "error": "channel_not_found"}
        return {
            "ok": True,
            "channel": {
                "id": channel,
                "name": channel.lower(),
                "is_channel": True,
                "is_member": channel in self.member_channels,
            },
        }

    def _m_conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users", "")).split(",")
        if len(users) != 1 or users[0] not in self.users:
            return {"ok": False, "error": "user_not_found"}
        channel = "D" + users[0]
        self.member_channels.add(channel)
        return {"ok": True, "channel": {"id": channel}}

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = args.get("filename")
        length = args.get("length")
        if not filename or length is None:
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ids):06d}"
        self.uploads[file_id] = Upload(
            file_id=file_id,
            filename=str(filename),
            length=int(length),
            alt_txt=args.get("alt_txt"),
        )
        return {"ok": True, "upload_url": f"{self.url}/upload/v1/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        files = _json_arg(args.get("files"))
        if not isinstance(files, list) or not files:
            return {"ok": False, "error": "invalid_arguments"}
        answered = []
        for item in files:
            upload = self.uploads.get(str(item.get("id")))
            if upload is None or upload.data is None:
                return {"ok": False, "error": "file_not_found"}
            answered.append({"id": upload.file_id, "title": item.get("title") or upload.filename})
        share_ts = self._next_ts()
        for item in files:
            upload = self.uploads[str(item["id"])]
            upload.title = item.get("title")
            upload.channel_id = args.get("channel_id") or None
            upload.initial_comment = args.get("initial_comment") or None
            upload.thread_ts = args.get("thread_ts") or None
            upload.share_ts = share_ts
            upload.completed = True
        return {"ok": True, "files": answered}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        failure = self._scripted("upload")
        if failure is not None:
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(int(failure.retry_after))
            return web.Response(status=failure.status, text=failure.error, headers=headers)
        upload = self.uploads.get(file_id)
        if upload is None:
            return web.Response(status=404, text="unknown upload")
        if "Authorization" in request.headers:
            return web.Response(status=400, text="the upload URL takes no Authorization")
        upload.data = data
        await self._notify()
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def _respond(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        body = await request.json()
        self.responses.append(ResponsePost(key, body))
        await self._notify()
        return web.Response(text="ok", content_type="text/html")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        # autoping answers the client's "sdk-ping-pong:<ts>" pings with the same payload.
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        if self.open_connections >= MAX_CONNECTIONS:
            await ws.send_str(
                json.dumps(
                    {
                        "type": "disconnect",
                        "reason": "too_many_websockets",
                        "debug_info": {"host": "fake"},
                    }
                )
            )
            await ws.close()
            return ws
        self.connections += 1
        number = self.connections
        self._sockets[ws] = number
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": self.open_connections,
                    "debug_info": {
                        "host": "fake",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": "A1"},
                }
            )
        )
        await self._notify()
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(message.data)
            except ValueError:
                continue
            if isinstance(data, dict) and "envelope_id" in data:
                ack = Ack(data["envelope_id"], data.get("payload"), time.monotonic(), number)
                self.acks.append(ack)
                await self._notify()
        self._sockets.pop(ws, None)
        self.disconnects += 1
        await self._notify()
        return ws


def _json_arg(value: Any) -> Any:
    """Block Kit and ``files`` arrive as JSON text (query/form) or as JSON values."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _envelope_user(envelope: Envelope) -> str | None:
    payload = envelope.payload
    if "user_id" in payload:
        return str(payload["user_id"])
    user = payload.get("user")
    if isinstance(user, Mapping):
        return str(user.get("id"))
    return None


def _buttons(blocks: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The buttons of a Block Kit message: in ``actions`` blocks and as section accessories."""
    found: list[Mapping[str, Any]] = []
    for block in blocks:
        if block.get("type") == "actions":
            found.extend(e for e in block.get("elements", []) if e.get("type") == "button")
        accessory = block.get("accessory")
        if isinstance(accessory, Mapping) and accessory.get("type") == "button":
            found.append(accessory)
    return found
