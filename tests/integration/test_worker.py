"""The engine live: a real worker process, the embedded broker and Redis.

One worker serves the whole module (a consumer-group join costs seconds); each test uses its
own users so tests do not see each other's state.

The page contract: every page-triggering event is answered by exactly one page, as the page's
``trigger_event_id`` or in its ``coalesced_event_ids`` (one page per user per batch: a user's
earlier triggers in a batch are answered by the page of their last one).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
import redis

from schemas.messages import BehaviourEvent, CatalogItem, Page
from tests.integration.harness import Cluster, TopicReader, Topics

GENRES = ("horror", "comedy", "drama", "scifi")
CATALOG = [
    CatalogItem(f"{genre}-{i}", f"{genre.title()} {i}", (genre,), 5400, (f"{genre}-{i}-art",))
    for genre in GENRES
    for i in range(10)
]
T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def cluster(
    bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    run = uuid.uuid4().hex[:10]
    topics = Topics(
        *(
            f"{name}-{run}"
            for name in ("events", "catalog", "recommendations", "churn", "dead-letters")
        )
    )
    prefix = f"insession-test-{run}:"
    cluster = Cluster(
        bootstrap,
        redis_url,
        prefix,
        topics,
        f"insession-test-{run}",
        tmp_path_factory.mktemp("worker"),
    )
    cluster.send_catalog(CATALOG)
    cluster.start_worker()
    try:
        cluster.wait_for_catalog(len(CATALOG), timeout=90)
        yield cluster
    finally:
        cluster.stop_all()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def pages(cluster: Cluster) -> Iterator[TopicReader]:
    reader = cluster.reader(cluster.topics.recommendations)
    yield reader
    reader.close()


def _event(
    user: str, kind: str, seq: int, item: str | None = None, **extra: object
) -> BehaviourEvent:
    return BehaviourEvent(
        event_id=f"{user}-{seq}", user_id=user, type=kind, ts=T0 + seq * 1000, item_id=item, **extra
    )  # type: ignore[arg-type]


def _pages_for(reader: TopicReader, user: str) -> list[Page]:
    return [page for page in reader.pages() if page.user_id == user]


def _answers(pages: list[Page]) -> Counter[str]:
    """How many pages answer each event id (as their trigger or a coalesced one)."""
    return Counter(
        event_id
        for page in pages
        for event_id in (page.trigger_event_id, *page.coalesced_event_ids)
    )


def _wait_answered(
    cluster: Cluster, reader: TopicReader, user: str, events: list[BehaviourEvent]
) -> list[Page]:
    """Wait until every one of ``events`` is answered; returns the user's pages so far."""
    wanted = {e.event_id for e in events}
    reader.wait(
        lambda r: wanted <= _answers(_pages_for(r, user)).keys(),
        60,
        f"pages answering {len(wanted)} events of {user}",
        cluster.worker_logs,
    )
    return _pages_for(reader, user)


def _assert_answered_once(pages: list[Page], events: list[BehaviourEvent]) -> None:
    """Exactly one page per trigger event, nothing else answered, the last event last."""
    answers = _answers(pages)
    assert answers == Counter(e.event_id for e in events), answers
    assert pages[-1].trigger_event_id == events[-1].event_id


def _genre_share_top(page: Page, genre: str, top: int = 10) -> float:
    order = [item.item_id for row in page.rows for item in row.items][:top]
    return sum(item_id.startswith(genre) for item_id in order) / max(len(order), 1)


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_event_in_page_out_for_the_right_user(
    cluster: Cluster, pages: TopicReader, fmt: str
) -> None:
    user = f"user-{fmt}-{uuid.uuid4().hex[:6]}"
    events = [
        _event(user, "session_start", 0),
        _event(user, "click", 1, "drama-1"),
        _event(user, "play", 2, "drama-1"),
    ]
    cluster.send_events(events, fmt)
    received = _wait_answered(cluster, pages, user, events)
    _assert_answered_once(received, events)
    assert all(p.rows for p in received)
    assert received[-1].session_id == received[0].session_id
    keys = {key for key, value in pages.messages if orjson.loads(value)["user_id"] == user}
    assert keys == {user.encode()}, "pages are keyed by user id"


def test_behaviour_shift_moves_the_page(cluster: Cluster, pages: TopicReader) -> None:
    user = f"shifter-{uuid.uuid4().hex[:6]}"
    comedy = [_event(user, "session_start", 0)]
    for i in range(6):
        comedy += [
            _event(user, "click", 10 + 2 * i, f"comedy-{i}"),
            _event(user, "play", 11 + 2 * i, f"comedy-{i}"),
        ]
    cluster.send_events(comedy)
    before = _wait_answered(cluster, pages, user, comedy)[-1]
    horror = []
    for i in range(8):
        horror += [
            _event(user, "click", 40 + 2 * i, f"horror-{i}"),
            _event(user, "play", 41 + 2 * i, f"horror-{i}"),
        ]
    cluster.send_events(horror)
    received = _wait_answered(cluster, pages, user, comedy + horror)
    _assert_answered_once(received, comedy + horror)
    after = received[-1]
    assert _genre_share_top(after, "horror") > _genre_share_top(before, "horror")
    assert _genre_share_top(before, "comedy") > _genre_share_top(after, "comedy") or (
        _genre_share_top(after, "horror") >= 0.5
    )
    assert after.rows[0].items[0].item_id.startswith("horror")


def test_bad_input_is_dead_lettered_and_good_input_still_flows(
    cluster: Cluster, pages: TopicReader
) -> None:
    user = f"mixed-{uuid.uuid4().hex[:6]}"
    bad = {
        b"{this is not json": "not valid JSON",
        orjson.dumps({"event_id": "x1", "user_id": user, "type": "click"}): "ts",
        orjson.dumps({"event_id": "x2", "user_id": user, "type": "teleport", "ts": T0}): "type",
        orjson.dumps(
            {
                "event_id": "x3",
                "user_id": user,
                "type": "click",
                "ts": "yesterday",
                "item_id": "drama-1",
            }
        ): "ts",
        orjson.dumps(
            {"event_id": "x4", "user_id": user, "type": "click", "ts": T0, "item_id": 42}
        ): "item_id",
        b"\x00\x00\x00\x00\x01garbage": "",
    }
    dead = cluster.reader(cluster.topics.dead_letters)
    try:
        for value in bad:
            cluster.send_raw(user.encode(), value)
        good = _event(user, "click", 5, "scifi-1")
        cluster.send_events([good])
        pages.wait(
            lambda r: any(p.trigger_event_id == good.event_id for p in r.pages()),
            60,
            "the good event's page",
            cluster.worker_logs,
        )
        dead.wait(
            lambda r: len([d for d in r.dead_letters() if d.original in bad]) >= len(bad),
            60,
            "every bad message in the dead-letter topic",
            cluster.worker_logs,
        )
        letters = {d.original: d for d in dead.dead_letters() if d.original in bad}
        for value, needle in bad.items():
            letter = letters[value]
            assert letter.error, "a dead letter always says why"
            assert needle in letter.error, (needle, letter.error)
            assert letter.source_topic == cluster.topics.events
            assert letter.source_offset >= 0
    finally:
        dead.close()


def test_redis_holds_the_latest_page_and_session(cluster: Cluster, pages: TopicReader) -> None:
    user = f"served-{uuid.uuid4().hex[:6]}"
    events = [
        _event(user, "session_start", 0),
        _event(user, "hover", 1, "scifi-2", dwell_ms=900),
        _event(user, "click", 2, "scifi-2"),
    ]
    cluster.send_events(events)
    last = _wait_answered(cluster, pages, user, events)[-1]
    stored = cluster.redis_json("page", user)
    assert stored["recommendation_id"] == last.recommendation_id
    assert stored["trigger_event_id"] == events[-1].event_id
    session = cluster.redis_json("session", user)
    assert session["clicks_count_session"] == 1
    assert session["hover_dwell_mean_ms"] == 900
    assert session["last_items"] == ["scifi-2"]
    ttl = cluster.redis.ttl(f"{cluster.key_prefix}page:{user}")
    assert 0 < ttl <= 86_400


def test_a_burst_of_triggers_is_answered_by_fewer_pages_each_trigger_once(
    cluster: Cluster, pages: TopicReader
) -> None:
    """Ten triggers in one burst reach the worker in one fetch: one page answers them all.

    "Fewer" rather than "one": the test does not control how the broker and the consumer cut
    batches, only that a burst produced at once arrives together.
    """
    user = f"burst-{uuid.uuid4().hex[:6]}"
    events = [_event(user, "session_start", 0)]
    for i in range(1, 10):
        if i % 2:
            events.append(_event(user, "hover", i, f"drama-{i}", dwell_ms=500))
        else:
            events.append(_event(user, "click", i, f"drama-{i}"))
    cluster.send_events(events)  # one flush: one produce request
    received = _wait_answered(cluster, pages, user, events)
    _assert_answered_once(received, events)
    assert len(received) < len(events), [p.trigger_event_id for p in received]
    last = received[-1]
    earlier = [e.event_id for e in events[:-1]]
    assert last.coalesced_event_ids, "the last page answers earlier triggers too"
    assert list(last.coalesced_event_ids) == [i for i in earlier if i in last.coalesced_event_ids]
    stored = cluster.redis_json("page", user)
    assert stored["recommendation_id"] == last.recommendation_id
    assert stored["coalesced_event_ids"] == list(last.coalesced_event_ids)


def test_worker_log_has_no_tracebacks(cluster: Cluster) -> None:
    assert "Traceback" not in cluster.worker_logs()
