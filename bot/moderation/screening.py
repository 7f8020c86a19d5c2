"""Moderation (issue 7): screen prompts before any quota hold, review refusals, admin rules.

``Moderation.screen`` runs, in order, for every ``/imagine`` (``ImageService.generate`` calls
it before the hold, so a refusal costs nothing):

1. the server's channel allow-list (``ChannelNotAllowedError`` outside it);
2. the built-in word list (``bot/data/blocked_words.txt``), then the server's blocked words and
   patterns (``bot.moderation.filter``), on the prompt and on the negative prompt, on a thread
   of its own
   (the filter is CPU work: folding, and RE2 searches linear in the text, which is at most
   ``MAX_CHECKED_LENGTH`` characters), so a check never holds up the event loop;
3. when ``MODERATION_API_BASE_URL`` is set, an OpenAI-compatible ``POST {base}/moderations``
   (``ModerationClient``); a flagged prompt is refused with its categories as the rule. When
   the endpoint fails, ``MODERATION_FAIL_POLICY`` (``refuse`` or ``allow``) decides and a
   WARNING says so.

A refusal writes a ``Review`` in state ``refused`` and its moderation log row (one statement),
then raises ``PromptRefusedError(source, rule, review_id=...)``. The user may ask an admin
(``ask``: ``refused -> pending``, undone by ``withdraw`` when the post for the admins fails);
an admin approves or denies it (``decide``); an approved review's job runs through
``bot.moderation.approval.run_approved``, unscreened and charged to the user.

``ModerationAdmin`` is the permission-checked admin API; every change is audited.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, NoReturn, TypeVar

import httpx
from pydantic import SecretStr

from bot.admin import actor_name
from bot.errors import (
    ChannelNotAllowedError,
    ConfigError,
    InvalidRequestError,
    PermissionDeniedError,
    PromptRefusedError,
    ReviewNotYoursError,
)
from bot.messages import (
    NO_REVIEW_CHANNEL,
    REVIEW_ALREADY_DECIDED,
    REVIEW_ALREADY_REQUESTED,
    REVIEW_NOT_FOUND,
    REVIEW_NOT_REQUESTED,
    prompt_too_long_to_check_text,
)
from bot.models import (
    GenerationRequest,
    ModerationEntry,
    Requester,
    Review,
    ReviewState,
    ServerRules,
)
from bot.moderation.filter import (
    MAX_CHECKED_LENGTH,
    PromptFilter,
    builtin_terms,
    cached_filter,
    check_pattern,
    check_term,
)
from bot.store.moderation import ModerationStore, RuleKind

__all__ = [
    "DEFAULT_MODERATION_MODEL",
    "MAX_RULES",
    "BlockChange",
    "FailPolicy",
    "Moderation",
    "ModerationAdmin",
    "ModerationClient",
    "ModerationUnavailableError",
    "ReviewPost",
    "split_block_term",
]

log = logging.getLogger(__name__)

DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
MAX_RULES = 500
"""Most blocked words (and, separately, patterns and allowed channels) per server."""

FailPolicy = Literal["refuse", "allow"]

T = TypeVar("T")

# Filter checks run on their own thread, not the loop's default executor: a burst of long
# prompts then takes at most one core (and rarely the GIL, for the folding) from the event
# loop and the image client's decoding; with several check threads the loop was seen 100+ ms
# late on two busy cores. One check takes milliseconds, so one thread keeps up.
_CHECK_THREADS = 1


def split_block_term(text: str) -> tuple[bool, str]:
    """How admins type a block rule: ``/regex/`` is a pattern, anything else a word or phrase.
    Returns ``(is_pattern, value)``: ``"/n[a@]ked/"`` -> ``(True, "n[a@]ked")``."""
    stripped = text.strip()
    if len(stripped) > 2 and stripped.startswith("/") and stripped.endswith("/"):
        return True, stripped[1:-1].strip()
    return False, stripped


@dataclass(frozen=True, slots=True)
class ReviewPost:
    """What ``Moderation.ask`` hands the adapter: the pending ``review`` to show the admins
    and the ``channel_id`` of the server's review channel to post it in."""

    review: Review
    channel_id: str


@dataclass(frozen=True, slots=True)
class BlockChange:
    """What ``block`` or ``unblock`` did: the ``value`` as stored, whether it is a
    ``pattern``, and whether anything ``changed`` (``False``: it was already so)."""

    value: str
    pattern: bool
    changed: bool


class ModerationUnavailableError(Exception):
    """The moderation endpoint gave no usable answer; ``detail`` is safe to log."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _moderations_url(base_url: str) -> httpx.URL:
    url = httpx.URL(base_url.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError("MODERATION_API_BASE_URL must be an http(s) URL")
    path = url.path.rstrip("/") or "/v1"
    return url.copy_with(path=f"{path}/moderations", query=None, fragment=None)


class ModerationClient:
    """An OpenAI-compatible ``POST {base}/moderations`` client on the process's HTTP client.

    ``base_url`` is the API root like ``IMAGE_API_BASE_URL``, ``/v1`` included (a bare origin
    gets ``/v1``). The key rides only in the ``Authorization`` header and never appears in a
    log line or an exception."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: SecretStr | None,
        model: str = DEFAULT_MODERATION_MODEL,
        fail_policy: FailPolicy = "refuse",
        timeout: float = 10.0,
    ) -> None:
        if fail_policy not in ("refuse", "allow"):
            raise ConfigError("MODERATION_FAIL_POLICY must be refuse or allow")
        self._http = http
        self._url = _moderations_url(base_url)
        self._where = f"{self._url.host}{self._url.path}"
        self._api_key = api_key
        self.model = model
        self.fail_policy: FailPolicy = fail_policy
        self._timeout = httpx.Timeout(timeout, connect=min(5.0, timeout))

    @property
    def endpoint(self) -> str:
        """Host and path of the endpoint (safe to log: no query, no user info)."""
        return self._where

    async def flagged(self, texts: Sequence[str]) -> str | None:
        """The flagged categories (``"sexual, violence"``) if any text is flagged, else
        ``None``. Raises ``ModerationUnavailableError`` when there is no usable answer."""
        headers = {}
        if self._api_key is not None and self._api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        try:
            response = await self._http.post(
                self._url,
                json={"model": self.model, "input": list(texts)},
                headers=headers,
                timeout=self._timeout,
            )
        except httpx.TimeoutException:
            raise ModerationUnavailableError("timed out") from None
        except httpx.HTTPError as exc:
            raise ModerationUnavailableError(f"request failed ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise ModerationUnavailableError(f"HTTP {response.status_code}{_error_code(response)}")
        try:
            results = response.json()["results"]
            if not isinstance(results, list) or not results:
                raise ValueError("no results")
            flagged: set[str] = set()
            any_flagged = False
            for result in results:
                if not isinstance(result.get("flagged"), bool):
                    raise ValueError("no flagged field")
                if result["flagged"]:
                    any_flagged = True
                    categories = result.get("categories") or {}
                    flagged.update(name for name, on in categories.items() if on is True)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModerationUnavailableError("malformed response") from None
        if not any_flagged:
            return None
        return ", ".join(sorted(flagged)) or "flagged"


def _error_code(response: httpx.Response) -> str:
    """`` (code)`` from an OpenAI-shaped error body, or nothing; never the message, which
    may echo (part of) the key."""
    try:
        error: Any = response.json()["error"]
        code = error.get("code") or error.get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""
    return f" ({code})" if isinstance(code, str | int) and code != "" else ""


class Moderation:
    """Screening, reviews and rules for every server; built once in ``adapters.runtime``."""

    def __init__(
        self,
        *,
        store: ModerationStore,
        client: ModerationClient | None = None,
        builtin: Iterable[str] | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self._builtin = PromptFilter(
            builtin_terms() if builtin is None else builtin, label="builtin"
        )
        self._checks = ThreadPoolExecutor(_CHECK_THREADS, thread_name_prefix="moderation")

    @classmethod
    def open(
        cls,
        store: ModerationStore,
        *,
        http: httpx.AsyncClient | None = None,
        base_url: str | None = None,
        api_key: SecretStr | None = None,
        model: str = DEFAULT_MODERATION_MODEL,
        fail_policy: FailPolicy = "refuse",
    ) -> Moderation:
        """Moderation on ``store``; with ``base_url`` (and ``http``) it also asks the
        moderation endpoint."""
        client = None
        if base_url:
            if http is None:
                raise ValueError("the moderation endpoint needs the process's HTTP client")
            client = ModerationClient(
                http=http,
                base_url=base_url,
                api_key=api_key,
                model=model,
                fail_policy=fail_policy,
            )
            log.info("moderation endpoint %s (on failure: %s)", client.endpoint, fail_policy)
        return cls(store=store, client=client)

    # --- screening -----------------------------------------------------------------------

    async def screen(self, request: GenerationRequest, requester: Requester) -> None:
        """Raise ``ChannelNotAllowedError`` or ``PromptRefusedError`` (logged, with a review)
        when the server's rules refuse this request; return when it may run."""
        rules = await self.rules(requester.platform, requester.workspace_id)
        if rules.allowed_channel_ids and requester.channel_id not in rules.allowed_channel_ids:
            raise ChannelNotAllowedError(rules.allowed_channel_ids)
        texts = [("", request.prompt)]
        if request.negative_prompt:
            texts.append((" (negative prompt)", request.negative_prompt))
        for _, text in texts:
            if len(text) > MAX_CHECKED_LENGTH:  # before any work on it
                raise InvalidRequestError(
                    prompt_too_long_to_check_text(len(text), MAX_CHECKED_LENGTH)
                )
        rule = await self.off_loop(functools.partial(self._match, rules, texts))
        if rule is not None:
            await self._refuse(request, requester, source="filter", rule=rule)
        if self.client is not None:
            try:
                categories = await self.client.flagged([text for _, text in texts])
            except ModerationUnavailableError as exc:
                refuse = self.client.fail_policy == "refuse"
                log.warning(
                    "moderation endpoint %s failed (%s); MODERATION_FAIL_POLICY=%s, so the "
                    "prompt from %s:%s is %s",
                    self.client.endpoint,
                    exc.detail,
                    self.client.fail_policy,
                    requester.platform,
                    requester.user_id,
                    "refused" if refuse else "allowed",
                )
                if refuse:
                    await self._refuse(
                        request,
                        requester,
                        source="moderation",
                        rule=f"moderation endpoint unavailable: {exc.detail}",
                    )
                return
            if categories is not None:
                await self._refuse(request, requester, source="moderation", rule=categories)

    async def off_loop(self, work: Callable[[], T]) -> T:
        """``work()`` on a moderation thread (with this task's context, for log lines)."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._checks, context.run, work)

    def _match(self, rules: ServerRules, texts: Sequence[tuple[str, str]]) -> str | None:
        """The first word-list or pattern rule any text hits. Runs on the moderation thread: it
        compiles the server's rules (once per rule set) and searches every text."""
        server = cached_filter(rules.blocked_terms, rules.blocked_patterns)
        for where, text in texts:
            rule = self._builtin.match(text) or server.match(text)
            if rule is not None:
                return rule + where
        return None

    async def _refuse(
        self, request: GenerationRequest, requester: Requester, *, source: str, rule: str
    ) -> NoReturn:
        review = await self.store.record_refusal(request, requester, source=source, rule=rule)
        log.info(
            "refused a prompt from %s:%s in %s (%s; review %s)",
            requester.platform,
            requester.user_id,
            requester.workspace_id or "-",
            source,
            review.review_id,
        )
        log.debug("review %s: rule %r, prompt %r", review.review_id, rule, request.prompt)
        raise PromptRefusedError(source=source, rule=rule, review_id=review.review_id)

    # --- rules and reviews ---------------------------------------------------------------

    async def rules(self, platform: str, workspace_id: str) -> ServerRules:
        return await self.store.rules(platform, workspace_id)

    async def spoilers(self, platform: str, workspace_id: str, *, age_restricted: bool) -> bool:
        """Whether images posted in a channel go behind a spoiler: the server turned spoilers
        on, and the platform does not mark the channel age-restricted (there, members chose to
        see such images). Outside a server (``workspace_id`` empty) never."""
        if not workspace_id or age_restricted:
            return False
        return (await self.store.rules(platform, workspace_id)).spoilers

    async def review(self, review_id: str) -> Review:
        """The review, or ``InvalidRequestError`` when there is none."""
        review = await self.store.review(review_id)
        if review is None:
            raise InvalidRequestError(REVIEW_NOT_FOUND)
        return review

    async def ask(self, review_id: str, requester: Requester) -> ReviewPost:
        """The refused user asks an admin; every platform's "Ask an admin" is this call.

        The steps, in this order, so that every refusal comes before any state changes:

        1. the review exists (``InvalidRequestError``, ``REVIEW_NOT_FOUND``);
        2. it is ``requester``'s own (``ReviewNotYoursError``), before anything about the
           server is read or said;
        3. it was not asked about already (``REVIEW_ALREADY_REQUESTED``, also for a decided
           review), so a replayed click is told so whatever the server's settings now;
        4. the server has a review channel (``NO_REVIEW_CHANNEL``): nothing is changed when
           there is no admin to ask;
        5. ``refused -> pending`` in one statement (a concurrent second click loses there and
           is told ``REVIEW_ALREADY_REQUESTED``).

        Returns what to post (the pending review) and where (the channel read in step 4). The
        adapter then posts it; whether the platform takes the post can only be known by trying,
        so when it does not (including a platform's own check that the bot may post there),
        the adapter calls ``withdraw`` and tells the user ``REVIEW_POST_FAILED``."""
        review = await self.review(review_id)
        mine = review.requester
        if (requester.platform, requester.workspace_id, requester.user_id) != (
            mine.platform,
            mine.workspace_id,
            mine.user_id,
        ):
            raise ReviewNotYoursError()
        if review.state is not ReviewState.REFUSED:
            raise InvalidRequestError(REVIEW_ALREADY_REQUESTED)
        channel_id = (await self.rules(mine.platform, mine.workspace_id)).review_channel_id
        if channel_id is None:
            raise InvalidRequestError(NO_REVIEW_CHANNEL)
        pending = await self.store.mark_pending(review_id)
        if pending is None:
            raise InvalidRequestError(REVIEW_ALREADY_REQUESTED)
        log.info("review %s requested by %s:%s", review_id, mine.platform, mine.user_id)
        return ReviewPost(review=pending, channel_id=channel_id)

    async def withdraw(self, review_id: str) -> None:
        """``pending -> refused``: the adapter could not post the review for the admins, so the
        user may ask again once the review channel works. A decided review stays decided."""
        if await self.store.mark_refused(review_id):
            log.info("review %s: request withdrawn (the review channel was unreachable)", review_id)

    async def decide(self, review_id: str, actor: Requester, approve: bool) -> Review:
        """An admin of the review's server approves or denies it (``pending -> approved |
        denied``, audited). A second decision is an ``InvalidRequestError``."""
        review = await self.review(review_id)
        if (
            not actor.is_admin
            or actor.platform != review.requester.platform
            or actor.workspace_id != review.requester.workspace_id
        ):
            raise PermissionDeniedError("approve or deny reviews")
        decided = await self.store.decide(review_id, approve=approve, decided_by=actor.user_id)
        if decided is None:
            current = await self.review(review_id)
            if current.state is ReviewState.REFUSED:
                raise InvalidRequestError(REVIEW_NOT_REQUESTED)
            raise InvalidRequestError(REVIEW_ALREADY_DECIDED)
        log.info("review %s %s by %s:%s", review_id, decided.state, actor.platform, actor.user_id)
        return decided


class ModerationAdmin:
    """The admin API for moderation. Every method takes the acting ``Requester``, raises
    ``PermissionDeniedError`` unless ``actor.is_admin``, acts on the actor's own platform and
    server only, and is audited (actor ``"<platform>:<user id>"``)."""

    def __init__(self, moderation: Moderation) -> None:
        self.moderation = moderation
        self._store = moderation.store

    @staticmethod
    def _check(actor: Requester, action: str) -> None:
        if not actor.is_admin:
            raise PermissionDeniedError(action)

    async def _add(self, actor: Requester, kind: RuleKind, value: str) -> bool:
        if await self._store.count_rules(actor.platform, actor.workspace_id, kind) >= MAX_RULES:
            raise InvalidRequestError(f"this server already has {MAX_RULES} of those")
        added = await self._store.add_rule(
            actor.platform, actor.workspace_id, kind, value, actor=actor_name(actor)
        )
        log.info("%s added %s rule to %s", actor_name(actor), kind, actor.workspace_id or "-")
        return added

    async def block(self, actor: Requester, term_or_regex: str) -> BlockChange:
        """Block what an admin typed: ``/regex/`` as a pattern, anything else as a word or
        phrase (``split_block_term``); every platform's ``block add`` is this call."""
        pattern, value = split_block_term(term_or_regex)
        if pattern:
            return BlockChange(value, True, await self.block_add_pattern(actor, value))
        return BlockChange(value, False, await self.block_add(actor, value))

    async def unblock(self, actor: Requester, term_or_regex: str) -> BlockChange:
        """Unblock what an admin typed, ``/regex/`` or a word; every platform's
        ``block remove`` is this call."""
        pattern, value = split_block_term(term_or_regex)
        return BlockChange(value, pattern, await self.block_remove(actor, term_or_regex))

    async def block_add(self, actor: Requester, term: str) -> bool:
        """Block a word or phrase; ``False`` when it was already blocked."""
        self._check(actor, "change the blocked words")
        return await self._add(actor, "term", check_term(term))

    async def block_add_pattern(self, actor: Requester, regex: str) -> bool:
        """Block a regular expression (``InvalidRequestError`` when RE2 cannot run it, it is
        too complex, alone or with the server's other patterns, or it matches everything)."""
        self._check(actor, "change the blocked words")
        rules = await self.moderation.rules(actor.platform, actor.workspace_id)
        # RE2's compiler can take tens of milliseconds on a large pattern: off the loop.
        vet = functools.partial(check_pattern, regex, rules.blocked_patterns)
        pattern = await self.moderation.off_loop(vet)
        return await self._add(actor, "pattern", pattern)

    async def block_remove(self, actor: Requester, term_or_regex: str) -> bool:
        """Unblock a word or a pattern (also accepted as ``/regex/``); ``False`` when neither
        was blocked."""
        self._check(actor, "change the blocked words")
        where = (actor.platform, actor.workspace_id)
        name = actor_name(actor)
        is_pattern, value = split_block_term(term_or_regex)
        if is_pattern and await self._store.remove_rule(*where, "pattern", value, actor=name):
            return True
        try:
            term = check_term(term_or_regex)
        except InvalidRequestError:
            term = None
        if term is not None and await self._store.remove_rule(*where, "term", term, actor=name):
            return True
        return await self._store.remove_rule(*where, "pattern", term_or_regex.strip(), actor=name)

    async def block_list(self, actor: Requester) -> ServerRules:
        self._check(actor, "view the blocked words")
        return await self.moderation.rules(actor.platform, actor.workspace_id)

    async def set_review_channel(self, actor: Requester, channel_id: str | None) -> None:
        """Where "Ask an admin" requests go (``None``: nowhere; the button then says so)."""
        self._check(actor, "set the review channel")
        await self._store.set_review_channel(
            actor.platform, actor.workspace_id, channel_id or None, actor=actor_name(actor)
        )

    async def allow_channel(self, actor: Requester, channel_id: str) -> bool:
        """Add a channel to the allow-list (once it has one, /imagine works only there)."""
        self._check(actor, "change where images can be made")
        if not channel_id:
            raise InvalidRequestError("name a channel")
        return await self._add(actor, "channel", channel_id)

    async def disallow_channel(self, actor: Requester, channel_id: str) -> bool:
        self._check(actor, "change where images can be made")
        return await self._store.remove_rule(
            actor.platform, actor.workspace_id, "channel", channel_id, actor=actor_name(actor)
        )

    async def set_spoilers(self, actor: Requester, on: bool) -> None:
        self._check(actor, "change the spoiler setting")
        await self._store.set_spoilers(
            actor.platform, actor.workspace_id, on, actor=actor_name(actor)
        )

    async def log(
        self, actor: Requester, days: int = 7, *, limit: int = 50
    ) -> tuple[ModerationEntry, ...]:
        """Refusals in the actor's server over the last ``days`` days, newest first."""
        self._check(actor, "view the moderation log")
        if not 1 <= days <= 366:
            raise InvalidRequestError("days must be between 1 and 366")
        since = self._store.now() - timedelta(days=days)
        return await self._store.log(actor.platform, actor.workspace_id, since=since, limit=limit)
