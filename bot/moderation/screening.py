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
   (``bot.moderation.endpoint.ModerationClient``); a flagged prompt is refused with its
   categories as the rule. When the endpoint fails, ``MODERATION_FAIL_POLICY`` (``refuse`` or
   ``allow``) decides and a WARNING says so.

A refusal writes a ``Review`` in state ``refused`` and its moderation log row (one statement),
then raises ``PromptRefusedError(source, rule, review_id=...)``. The user may ask an admin
(``ask``: ``refused -> pending``, undone by ``withdraw`` when the post for the admins fails);
an admin approves or denies it (``decide``); an approved review's job runs through
``bot.moderation.approval.run_approved``, unscreened and charged to the user.

``bot.moderation.admin.ModerationAdmin`` is the permission-checked admin API; every change is
audited.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import httpx
from pydantic import SecretStr

from bot.errors import (
    ChannelNotAllowedError,
    InvalidRequestError,
    PermissionDeniedError,
    PromptRefusedError,
    ReviewNotYoursError,
    ReviewStateError,
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
    Requester,
    Review,
    ReviewState,
    ServerRules,
)
from bot.moderation.endpoint import (
    DEFAULT_MODERATION_MODEL,
    FailPolicy,
    ModerationClient,
    ModerationUnavailableError,
)
from bot.moderation.filter import (
    MAX_CHECKED_LENGTH,
    PromptFilter,
    builtin_terms,
    cached_filter,
)
from bot.store.moderation import ModerationStore

__all__ = ["Moderation", "ReviewPost"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Filter checks run on their own thread, not the loop's default executor: a burst of long
# prompts then takes at most one core (and rarely the GIL, for the folding) from the event
# loop and the image client's decoding; with several check threads the loop was seen 100+ ms
# late on two busy cores. One check takes milliseconds, so one thread keeps up.
_CHECK_THREADS = 1


@dataclass(frozen=True, slots=True)
class ReviewPost:
    """What ``Moderation.ask`` hands the adapter: the pending ``review`` to show the admins
    and the ``channel_id`` of the server's review channel to post it in."""

    review: Review
    channel_id: str


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
            raise ReviewStateError(REVIEW_NOT_FOUND)
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
            raise ReviewStateError(REVIEW_ALREADY_REQUESTED)
        channel_id = (await self.rules(mine.platform, mine.workspace_id)).review_channel_id
        if channel_id is None:
            raise ReviewStateError(NO_REVIEW_CHANNEL)
        pending = await self.store.mark_pending(review_id)
        if pending is None:
            raise ReviewStateError(REVIEW_ALREADY_REQUESTED)
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
                raise ReviewStateError(REVIEW_NOT_REQUESTED)
            raise ReviewStateError(REVIEW_ALREADY_DECIDED)
        log.info("review %s %s by %s:%s", review_id, decided.state, actor.platform, actor.user_id)
        return decided
