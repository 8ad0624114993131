"""The simulated population: every user's session life cycle on one simulated clock.

Each user is a small state machine — start a session, view pages, play and watch, get bored,
leave, maybe come back — driven by their hidden ``Taste`` and their own seeded random stream.
A user's events depend only on the seed and the pages that user was shown, never on other
users or on timing, so a run is reproducible given the pages (``tests/unit/test_simulation``).

The population is advanced one user step at a time in simulated-time order (a heap of due
times); the caller supplies the page each user sees. Event times are simulated epoch
milliseconds: a hover lasts seconds, a title plays for minutes, users come back after tens of
minutes. The simulator also measures, from the ground truth, what each experiment arm achieved
and what the oracle would have (``oracle``).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from dataclasses import dataclass, field

from processors.attribution import ArmMetrics
from processors.config import EngineConfig
from schemas.messages import BehaviourEvent, CatalogItem, Page
from stream.simulation.oracle import Oracle
from stream.simulation.response import (
    MAX_WATCH_SEGMENT_S,
    PLAY_AFTER_CLICK,
    Action,
    SessionMemory,
    plan_watch,
    scan_page,
)
from stream.simulation.users import Taste, build_tastes
from stream.simulation.world import World, build_world

__all__ = ["SimConfig", "Simulation", "UserView"]

_START, _BROWSE, _WATCH_END, _GONE = "start", "browse", "watch_end", "gone"
_HOUR_MS = 3_600_000
_MINUTE_MS = 60_000
#: Page views in one session before even a patient user stops.
_MAX_VIEWS_PER_SESSION = 40
#: After a play ends, the chance the user keeps browsing, by how it ended.
_CONTINUE_AFTER = {"completion": 0.5, "pause": 0.3, "drop_off": 0.75}
#: A session without a play makes the user less likely to come back.
_UNSATISFIED_RETURN = 0.6


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What to simulate. The same config and the same pages give the same events."""

    users: int = 600
    items: int = 400
    seed: int = 7
    #: Prefix of user ids: a fresh run id keeps a new run apart from old state in Redis.
    run_id: str = "sim"
    #: First sessions start spread evenly over this many simulated minutes (arrivals).
    ramp_minutes: float = 60.0
    #: Event types after which the engine serves a new page (what a user waits for).
    trigger_types: frozenset[str] = EngineConfig().page_trigger_types


@dataclass(slots=True)
class _Watching:
    item_id: str
    page: Page
    artwork_id: str | None
    row_id: str
    position: int
    progress: float
    end_progress: float
    end_type: str


@dataclass(slots=True)
class _User:
    taste: Taste
    rng: random.Random
    index: int
    phase: str = _START
    due_ts: int = 0
    seq: int = 0
    session_no: int = 0
    session_id: str = ""
    device: str = ""
    boredom: int = 0
    views: int = 0
    session_events: int = 0
    session_start_ts: int = 0
    last_ts: int = 0
    played: bool = False
    arm: str | None = None
    watching: _Watching | None = None
    memory: SessionMemory = field(default_factory=SessionMemory.empty)


@dataclass(frozen=True, slots=True)
class UserView:
    """What a display may show about one user (their hidden taste included)."""

    user_id: str
    loved_genres: tuple[str, ...]
    style_pref: str
    device: str
    arm: str | None
    phase: str
    session_no: int


class Simulation:
    """The world, the users and the simulated clock; pages go in, events come out."""

    def __init__(self, config: SimConfig, *, start_ms: int) -> None:
        self.config = config
        self.start_ms = start_ms
        self.world: World = build_world(config.items, config.seed)
        self.oracle = Oracle(self.world)
        #: Ground truth per arm, from the pages' own variants.
        self.metrics = ArmMetrics()
        #: Expected clicks/impressions per arm: served pages and the oracle's (see ``oracle``).
        self.expected: dict[str, list[float]] = {}
        self.expected_by_minute: dict[int, dict[str, list[float]]] = {}
        self.counters: Counter[str] = Counter()
        self.clock_ms = start_ms
        self.users: dict[str, _User] = {}
        self._heap: list[tuple[int, int, str]] = []
        self.followed: set[str] = set()
        self.log: dict[str, deque[str]] = {}
        ramp_ms = int(config.ramp_minutes * _MINUTE_MS)
        for index, taste in enumerate(
            build_tastes(config.users, config.seed, f"{config.run_id}-u")
        ):
            rng = random.Random(f"behaviour:{config.seed}:{index}")
            user = _User(taste=taste, rng=rng, index=index)
            user.due_ts = start_ms + int(rng.random() * ramp_ms)
            self.users[taste.user_id] = user
            heapq.heappush(self._heap, (user.due_ts, index, taste.user_id))

    # -- the loop's interface ------------------------------------------------------------

    def catalog(self) -> list[CatalogItem]:
        """The catalog to publish before any event."""
        return self.world.catalog()

    def peek(self) -> tuple[int, str] | None:
        """``(due_ts, user_id)`` of the next user to act, or None when everyone has left."""
        return (self._heap[0][0], self._heap[0][2]) if self._heap else None

    def needs_page(self, user_id: str) -> bool:
        """Whether the user's next step looks at a page (so the loop should have it fresh)."""
        return self.users[user_id].phase == _BROWSE

    def act(self, user_id: str, page: Page | None) -> list[BehaviourEvent]:
        """Advance the user at the head of the queue by one step; ``page`` is what they see."""
        due_ts, _, head = heapq.heappop(self._heap)
        if head != user_id:
            raise ValueError(f"{user_id!r} is not the next user to act ({head!r} is)")
        user = self.users[user_id]
        self.clock_ms = max(self.clock_ms, due_ts)
        if user.phase == _START:
            events = self._start_session(user)
        elif user.phase == _BROWSE:
            events = self._browse(user, page)
        elif user.phase == _WATCH_END:
            events = self._end_watch(user)
        else:  # pragma: no cover - gone users are never queued
            raise AssertionError(f"{user_id} is gone")
        if user.phase != _GONE:
            heapq.heappush(self._heap, (user.due_ts, user.index, user_id))
        self.counters["events"] += len(events)
        return events

    def defer(self, user_id: str, delay_ms: int) -> None:
        """Let the user at the head of the queue wait ``delay_ms`` (their page is loading).

        Only the live loop defers (when the worker's answer has not arrived yet); this shifts
        the user's later event times, so a deferred run is no longer a pure function of the
        pages. In-process runs never defer.
        """
        due_ts, index, head = heapq.heappop(self._heap)
        if head != user_id:
            heapq.heappush(self._heap, (due_ts, index, head))
            raise ValueError(f"{user_id!r} is not the next user to act ({head!r} is)")
        user = self.users[user_id]
        user.due_ts = due_ts + delay_ms
        heapq.heappush(self._heap, (user.due_ts, index, user_id))
        self.counters["deferred_steps"] += 1

    def last_trigger(self, events: list[BehaviourEvent]) -> str | None:
        """Id of the last event that makes the engine serve a page (the one to wait for)."""
        for event in reversed(events):
            if event.type in self.config.trigger_types:
                return event.event_id
        return None

    def view(self, user_id: str) -> UserView:
        """A readable summary of one user, hidden taste included (for displays)."""
        user = self.users[user_id]
        return UserView(
            user_id=user_id,
            loved_genres=user.taste.loved_genres,
            style_pref=user.taste.style_pref,
            device=user.device or user.taste.device,
            arm=user.arm,
            phase=user.phase,
            session_no=user.session_no,
        )

    def active_users(self) -> int:
        """Users who have not left for good."""
        return len(self._heap)

    def follow(self, user_id: str) -> None:
        """Keep a readable log of this user's actions (``log[user_id]``)."""
        self.followed.add(user_id)
        self.log.setdefault(user_id, deque(maxlen=12))

    # -- session life cycle -------------------------------------------------------------

    def _start_session(self, user: _User) -> list[BehaviourEvent]:
        taste, rng = user.taste, user.rng
        user.session_no += 1
        user.session_id = f"{taste.user_id}-s{user.session_no}"
        user.device = taste.device if rng.random() < taste.device_loyalty else taste.other_device
        user.boredom = 0
        user.views = 0
        user.session_events = 0
        user.session_start_ts = user.due_ts
        user.played = False
        user.memory.passes.clear()
        self.counters["sessions_started"] += 1
        event = self._event(user, "session_start", user.due_ts)
        self._note(user, f"opens the app on {user.device} (session {user.session_no})")
        user.phase = _BROWSE
        user.due_ts += rng.randint(800, 2_500)  # the first page loads
        return [event]

    def _browse(self, user: _User, page: Page | None) -> list[BehaviourEvent]:
        taste, rng = user.taste, user.rng
        user.views += 1
        if page is None or not page.rows:
            self.counters["views_without_page"] += 1
            self._note(user, "sees an empty page")
            return self._after_view(user, user.due_ts, clicked=False)
        user.arm = page.variant
        self.counters["page_views"] += 1
        self._expect(user, page)
        actions, click = scan_page(taste, self.world, page, user.device, user.memory, rng)
        events = [self._from_action(user, action, page) for action in actions]
        last_ts = events[-1].ts if events else user.due_ts
        if click is None:
            self._note(user, self._describe_view(actions))
            return events + self._after_view(user, last_ts, clicked=False)
        item = self.world.by_id[click.item_id]
        if rng.random() >= PLAY_AFTER_CLICK:
            self._note(user, f"clicks {item.title} ({'/'.join(item.genres)}) but does not play")
            return events + self._after_view(user, last_ts, clicked=True)
        plan = plan_watch(taste, item, user.memory, rng)
        play_ts = last_ts + rng.randint(2_000, 6_000)
        watching = _Watching(
            item.item_id,
            page,
            click.artwork_id,
            click.row_id,
            click.position,
            plan.start_progress,
            plan.end_progress,
            plan.end_type,
        )
        events.append(
            self._event(
                user,
                "play",
                play_ts,
                item_id=item.item_id,
                page=page,
                row_id=click.row_id,
                position=click.position,
                artwork_id=click.artwork_id,
                progress=round(plan.start_progress, 4),
            )
        )
        user.played = True
        user.watching = watching
        user.phase = _WATCH_END
        user.due_ts = play_ts + self._segment_ms(item.item_id, watching)
        self._note(
            user,
            f"plays {item.title} ({'/'.join(item.genres)}) from row {click.row_id!r}, "
            f"position {click.position}",
        )
        return events

    def _after_view(self, user: _User, last_ts: int, *, clicked: bool) -> list[BehaviourEvent]:
        """Schedule the next page view, or end the session when the user is bored."""
        if not clicked:
            user.boredom += 1
        if user.boredom >= user.taste.patience or user.views >= _MAX_VIEWS_PER_SESSION:
            self._note(user, "gets bored and leaves")
            self._end_session(user, last_ts)
            return []
        user.phase = _BROWSE
        user.due_ts = last_ts + user.rng.randint(2_000, 8_000)
        return []

    def _segment_ms(self, item_id: str, watching: _Watching) -> int:
        """Event-time length of the next stretch of watching (at most one segment)."""
        duration_s = max(self.world.by_id[item_id].duration_s, 60)
        remaining_s = (watching.end_progress - watching.progress) * duration_s
        return max(int(min(remaining_s, MAX_WATCH_SEGMENT_S) * 1000), 1_000)

    def _end_watch(self, user: _User) -> list[BehaviourEvent]:
        watching = user.watching
        assert watching is not None
        duration_s = max(self.world.by_id[watching.item_id].duration_s, 60)
        reached = watching.progress + MAX_WATCH_SEGMENT_S / duration_s
        if reached < watching.end_progress:
            return self._short_break(user, watching, round(reached, 4))
        user.watching = None
        memory = user.memory
        if watching.end_type == "completion":
            memory.finished.add(watching.item_id)
            memory.paused.pop(watching.item_id, None)
        elif watching.end_type == "pause":
            memory.paused[watching.item_id] = watching.end_progress
        else:
            memory.paused.pop(watching.item_id, None)
        event = self._event(
            user,
            watching.end_type,
            user.due_ts,
            item_id=watching.item_id,
            page=watching.page,
            row_id=watching.row_id,
            position=watching.position,
            artwork_id=watching.artwork_id,
            progress=watching.end_progress,
        )
        title = self.world.by_id[watching.item_id].title
        self._note(
            user, f"{watching.end_type.replace('_', '-')} of {title} at {watching.end_progress:.0%}"
        )
        if user.rng.random() < _CONTINUE_AFTER[watching.end_type]:
            user.boredom = 0
            user.phase = _BROWSE
            user.due_ts += user.rng.randint(3_000, 10_000)
        else:
            self._end_session(user, user.due_ts)
        return [event]

    def _short_break(
        self, user: _User, watching: _Watching, progress: float
    ) -> list[BehaviourEvent]:
        """A long title is watched in stretches: pause, a short break, play again.

        Events carry no heartbeat while a title plays, so without the break a film would look
        like 30 minutes of inactivity and the engine would end the session mid-film.
        """
        # From the player, not from a page: no recommendation id, so the break is not an
        # outcome of any page (the final completion or drop-off is, through the first play).
        fields = {
            "item_id": watching.item_id,
            "row_id": watching.row_id,
            "position": watching.position,
            "artwork_id": watching.artwork_id,
            "progress": progress,
        }
        pause = self._event(user, "pause", user.due_ts, **fields)  # type: ignore[arg-type]
        resume_ts = user.due_ts + user.rng.randint(20_000, 180_000)
        play = self._event(user, "play", resume_ts, **fields)  # type: ignore[arg-type]
        watching.progress = progress
        user.due_ts = resume_ts + self._segment_ms(watching.item_id, watching)
        return [pause, play]

    def _end_session(self, user: _User, last_ts: int) -> None:
        taste, rng = user.taste, user.rng
        if user.arm is not None:
            self.metrics.record_session(
                user.arm,
                played=user.played,
                events=user.session_events,
                duration_ms=max(last_ts, user.last_ts) - user.session_start_ts,
                end_ts=max(last_ts, user.last_ts),
            )
        self.counters["sessions_ended"] += 1
        chance = taste.return_prob * (1.0 if user.played else _UNSATISFIED_RETURN)
        if rng.random() >= chance:
            user.phase = _GONE
            self.counters["users_gone"] += 1
            self._note(user, "does not come back")
            return
        gap_ms = int(max(rng.expovariate(1.0 / taste.return_gap_min), 5.0) * _MINUTE_MS)
        next_ts = last_ts + gap_ms
        local_hour = self._local_hour(taste, next_ts)
        if not taste.is_active_at(local_hour):  # wait for the user's usual hours
            wait_h = (taste.active_from_h - local_hour) % 24
            next_ts += wait_h * _HOUR_MS - next_ts % _HOUR_MS + rng.randrange(_HOUR_MS)
        user.phase = _START
        user.due_ts = next_ts

    # -- helpers ----------------------------------------------------------------------------

    def _expect(self, user: _User, page: Page) -> None:
        served = self.oracle.served(user.taste, page, user.device, user.memory)
        best = self.oracle.best(user.taste, page, user.device, user.memory)
        sums = (served.clicks, served.impressions, best.clicks, best.impressions)
        for table in (
            self.expected,
            self.expected_by_minute.setdefault((user.due_ts - self.start_ms) // _MINUTE_MS, {}),
        ):
            row = table.setdefault(page.variant, [0.0, 0.0, 0.0, 0.0])
            for index, value in enumerate(sums):
                row[index] += value

    def _from_action(self, user: _User, action: Action, page: Page) -> BehaviourEvent:
        return self._event(
            user,
            action.type,
            user.due_ts + action.offset_ms,
            item_id=action.item_id,
            page=page,
            row_id=action.row_id,
            position=action.position,
            artwork_id=action.artwork_id,
            dwell_ms=action.dwell_ms,
        )

    def _event(
        self,
        user: _User,
        event_type: str,
        ts: int,
        *,
        item_id: str | None = None,
        page: Page | None = None,
        row_id: str | None = None,
        position: int | None = None,
        artwork_id: str | None = None,
        dwell_ms: int | None = None,
        progress: float | None = None,
    ) -> BehaviourEvent:
        user.seq += 1
        user.session_events += 1
        user.last_ts = max(user.last_ts, ts)
        if page is not None:
            self.metrics.record_event(page.variant, event_type, ts)
        return BehaviourEvent(
            event_id=f"{user.taste.user_id}-e{user.seq}",
            user_id=user.taste.user_id,
            type=event_type,
            ts=ts,
            item_id=item_id,
            session_id=user.session_id,
            device=user.device,
            row_id=row_id,
            position=position,
            artwork_id=artwork_id,
            dwell_ms=dwell_ms,
            progress=progress,
            recommendation_id=page.recommendation_id if page is not None else None,
            local_hour=self._local_hour(user.taste, ts),
        )

    @staticmethod
    def _local_hour(taste: Taste, ts: int) -> int:
        return (ts // _HOUR_MS + taste.tz_offset_h) % 24

    def _note(self, user: _User, text: str) -> None:
        log = self.log.get(user.taste.user_id)
        if log is not None:
            log.append(text)

    def _describe_view(self, actions: list[Action]) -> str:
        impressions = sum(1 for a in actions if a.type == "impression")
        hovers = [a for a in actions if a.type == "hover"]
        text = f"looks at {impressions} titles, clicks none"
        if hovers:
            longest = max(hovers, key=lambda a: a.dwell_ms or 0)
            item = self.world.by_id.get(longest.item_id)
            if item is not None:
                seconds = (longest.dwell_ms or 0) / 1000
                text += f"; lingers {seconds:.1f} s on {item.title} ({'/'.join(item.genres)})"
        return text
