"""Unit and property tests for schemas.codec: round trips, hostile input, exact error messages."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import math
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from schemas import codec
from schemas.codec import (
    DEFAULT_LIMITS,
    OUTPUT_LIMITS,
    SCHEMA_IDS,
    CodecLimits,
    DecodeError,
    decode_catalog_item,
    decode_churn_alert,
    decode_dead_letter,
    decode_event,
    decode_page,
    encode_catalog_item,
    encode_churn_alert,
    encode_dead_letter,
    encode_event,
    encode_page,
    load_schema,
)
from schemas.messages import (
    BEHAVIOUR_EVENT_TYPES,
    ITEM_EVENT_TYPES,
    BehaviourEvent,
    CatalogItem,
    ChurnAlert,
    DeadLetter,
    Page,
    PageItem,
    PageRow,
)

INT_MAX = 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
FORMATS = ("json", "avro")

#: A complete, valid event as a producer would send it; tests mutate copies of it.
VALID_EVENT: dict[str, Any] = {
    "event_id": "e-1",
    "user_id": "u-1",
    "type": "click",
    "ts": 1_700_000_000_000,
    "item_id": "i-1",
    "session_id": "s-1",
    "device": "tv",
    "row_id": "trending",
    "position": 3,
    "artwork_id": "a-1",
    "dwell_ms": 1500,
    "progress": 0.25,
    "recommendation_id": "r-1",
    "local_hour": 21,
}
EVENT_FIELD_NAMES = tuple(VALID_EVENT)
REQUIRED_EVENT_FIELDS = ("event_id", "user_id", "type", "ts")


def _json(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def _avro(schema_name: str, record: dict[str, Any], schema_id: int | None = None) -> bytes:
    """Confluent-frame ``record`` by hand, so tests can write values the encoders never would."""
    out = io.BytesIO()
    out.write(b"\x00" + (schema_id or SCHEMA_IDS[schema_name]).to_bytes(4, "big"))
    fastavro.schemaless_writer(out, load_schema(schema_name), record)
    return out.getvalue()


def _decode_error(raw: bytes, decode: Any = decode_event, **kwargs: Any) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(raw, **kwargs)
    return info.value


# --- strategies ------------------------------------------------------------------------------

# Surrogates are not valid UTF-8, so neither orjson nor Avro can carry them.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
IDS = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=24)
LONGS = st.integers(LONG_MIN, LONG_MAX)
FINITE = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def events(draw: st.DrawFn) -> BehaviourEvent:
    event_type = draw(st.sampled_from(sorted(BEHAVIOUR_EVENT_TYPES)))
    return BehaviourEvent(
        event_id=draw(IDS),
        user_id=draw(IDS),
        type=event_type,
        ts=draw(st.integers(1, 2**53 - 1)),
        item_id=draw(IDS if event_type in ITEM_EVENT_TYPES else st.none() | IDS),
        session_id=draw(st.none() | TEXT),
        device=draw(st.none() | TEXT),
        row_id=draw(st.none() | TEXT),
        position=draw(st.none() | st.integers(0, INT_MAX)),
        artwork_id=draw(st.none() | TEXT),
        dwell_ms=draw(st.none() | st.integers(0, LONG_MAX)),
        progress=draw(st.none() | st.floats(0.0, 1.0)),
        recommendation_id=draw(st.none() | TEXT),
        local_hour=draw(st.none() | st.integers(0, 23)),
    )


def _tuples(elements: st.SearchStrategy[Any], max_size: int = 4) -> st.SearchStrategy[Any]:
    return st.lists(elements, max_size=max_size).map(tuple)


CATALOG_ITEMS = st.builds(
    CatalogItem,
    item_id=IDS,
    title=TEXT,
    genres=_tuples(TEXT),
    duration_s=st.integers(0, INT_MAX),
    artworks=_tuples(TEXT),
)
PAGES = st.builds(
    Page,
    user_id=TEXT,
    session_id=TEXT,
    recommendation_id=TEXT,
    trigger_event_id=TEXT,
    generated_at=LONGS,
    rows=_tuples(
        st.builds(
            PageRow,
            row_id=TEXT,
            title=TEXT,
            items=_tuples(
                st.builds(PageItem, item_id=TEXT, score=FINITE, artwork_id=st.none() | TEXT)
            ),
        ),
        max_size=3,
    ),
    variant=TEXT,
)
CHURN_ALERTS = st.builds(
    ChurnAlert,
    alert_id=TEXT,
    user_id=TEXT,
    session_id=TEXT,
    risk=FINITE,
    reasons=_tuples(TEXT),
    ts=LONGS,
)
DEAD_LETTERS = st.builds(
    DeadLetter,
    original=st.binary(max_size=200),
    error=TEXT,
    source_topic=TEXT,
    source_partition=st.integers(-(2**31), INT_MAX),
    source_offset=LONGS,
    ts=LONGS,
    headers=st.dictionaries(TEXT, TEXT, max_size=4),
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(LONG_MIN, 2**64 - 1)
    | FINITE
    | TEXT
    | st.text(min_size=250, max_size=300)  # around max_string_len
    | st.sampled_from(sorted(BEHAVIOUR_EVENT_TYPES))
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=6,
)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@given(event=events())
def test_event_round_trips(fmt: str, event: BehaviourEvent) -> None:
    assert decode_event(encode_event(event, fmt)) == event


@pytest.mark.parametrize("fmt", FORMATS)
@given(item=CATALOG_ITEMS)
def test_catalog_item_round_trips(fmt: str, item: CatalogItem) -> None:
    assert decode_catalog_item(encode_catalog_item(item, fmt)) == item


@pytest.mark.parametrize("fmt", FORMATS)
@given(page=PAGES)
def test_page_round_trips(fmt: str, page: Page) -> None:
    assert decode_page(encode_page(page, fmt)) == page


@pytest.mark.parametrize("fmt", FORMATS)
@given(alert=CHURN_ALERTS)
def test_churn_alert_round_trips(fmt: str, alert: ChurnAlert) -> None:
    assert decode_churn_alert(encode_churn_alert(alert, fmt)) == alert


@pytest.mark.parametrize("fmt", FORMATS)
@given(letter=DEAD_LETTERS)
def test_dead_letter_round_trips(fmt: str, letter: DeadLetter) -> None:
    assert decode_dead_letter(encode_dead_letter(letter, fmt)) == letter


@pytest.mark.parametrize(
    ("encoded", "schema_name"),
    [
        (encode_event(BehaviourEvent("e", "u", "session_start", 1), "avro"), "BehaviourEvent"),
        (encode_catalog_item(CatalogItem("i"), "avro"), "CatalogItem"),
        (encode_page(Page("u", "s", "r", "e", 1, ()), "avro"), "Page"),
        (encode_churn_alert(ChurnAlert("a", "u", "s", 0.5, (), 1), "avro"), "ChurnAlert"),
        (encode_dead_letter(DeadLetter(b"x", "bad"), "avro"), "DeadLetter"),
    ],
)
def test_avro_encoding_writes_the_confluent_header(encoded: bytes, schema_name: str) -> None:
    assert encoded[:5] == b"\x00" + SCHEMA_IDS[schema_name].to_bytes(4, "big")


def test_schema_ids_are_the_agreed_local_ids() -> None:
    assert SCHEMA_IDS == {
        "BehaviourEvent": 1,
        "CatalogItem": 2,
        "Page": 3,
        "ChurnAlert": 4,
        "DeadLetter": 5,
        "SnapshotRecord": 6,
    }


def test_event_json_is_plain_json_with_every_field() -> None:
    event = BehaviourEvent("e", "u", "play", 5, item_id="i", progress=0.5)
    assert orjson.loads(encode_event(event)) == dataclasses.asdict(event)


def test_dead_letter_json_carries_the_original_as_base64() -> None:
    letter = DeadLetter(b"\xff\x00{", "not valid JSON", "events", 2, 42, 7, {"k": "v"})
    obj = orjson.loads(encode_dead_letter(letter))
    assert obj == {
        "original_b64": base64.b64encode(b"\xff\x00{").decode(),
        "error": "not valid JSON",
        "source_topic": "events",
        "source_partition": 2,
        "source_offset": 42,
        "ts": 7,
        "headers": {"k": "v"},
    }


def test_dead_letter_defaults_fill_in_and_headers_are_not_shared() -> None:
    first = decode_dead_letter(b'{"original_b64": "", "error": "e"}')
    second = decode_dead_letter(b'{"original_b64": "", "error": "e"}')
    assert first == DeadLetter(b"", "e", "", -1, -1, 0, {})
    assert first.headers is not second.headers


def test_dead_letter_rejects_bad_base64() -> None:
    err = _decode_error(b'{"original_b64": "!!", "error": "e"}', decode_dead_letter)
    assert err.field == "original_b64"
    assert err.reason.startswith("not valid base64")
    assert str(_decode_error(b'{"error": "e"}', decode_dead_letter)) == (
        "original_b64: missing required field"
    )


def test_page_variant_defaults_to_personalized() -> None:
    raw = b'{"user_id":"u","session_id":"s","recommendation_id":"r","trigger_event_id":"e",'
    raw += b'"generated_at":1,"rows":[]}'
    assert decode_page(raw).variant == "personalized"
    fields = load_schema("Page")["fields"]
    assert [f.get("default") for f in fields if f["name"] == "variant"] == ["personalized"]


def test_snapshot_record_schema_round_trips() -> None:
    schema = load_schema("SnapshotRecord")
    record = {
        "topic": "events",
        "partition": 3,
        "offset": 2**40,
        "timestamp": 1_700_000_000_000,
        "key": b"u-1",
        "value": None,
        "headers": [
            {"key": "content-type", "value": b"application/json"},
            {"key": "x", "value": None},
        ],
    }
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    assert fastavro.schemaless_reader(io.BytesIO(out.getvalue()), schema) == record


def test_encoders_reject_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        encode_event(BehaviourEvent("e", "u", "session_start", 1), "xml")


# --- hostile input ---------------------------------------------------------------------------

_AVRO_EVENT_HEADER = b"\x00\x00\x00\x00\x01"


@given(
    raw=st.binary(max_size=300)
    | st.binary(max_size=200).map(lambda body: _AVRO_EVENT_HEADER + body)
    | st.binary(max_size=200).map(lambda body: b"{" + body)
    | JSON_VALUES.map(lambda value: orjson.dumps({"type": "click", "ts": value}))
)
@example(raw=b"")
@example(raw=b" \n")
@example(raw=_AVRO_EVENT_HEADER + b"\xff" * 12)  # huge varint lengths
@example(raw=b"\x00" * 5)
def test_arbitrary_bytes_give_an_event_or_a_decode_error(raw: bytes) -> None:
    try:
        event = decode_event(raw)
    except DecodeError as err:
        assert str(err)
    else:
        # Whatever is accepted must be a valid event: it survives both encodings unchanged.
        for fmt in FORMATS:
            assert decode_event(encode_event(event, fmt)) == event


@pytest.mark.parametrize(
    "decode", [decode_catalog_item, decode_page, decode_churn_alert, decode_dead_letter]
)
@given(raw=st.binary(max_size=200), schema_id=st.integers(1, 6))
def test_other_decoders_raise_only_decode_error(decode: Any, raw: bytes, schema_id: int) -> None:
    for candidate in (raw, b"\x00" + schema_id.to_bytes(4, "big") + raw, b"{" + raw):
        with contextlib.suppress(DecodeError):
            decode(candidate)


@given(event=events(), data=st.data())
def test_corrupted_avro_gives_an_event_or_a_decode_error(event: BehaviourEvent, data: Any) -> None:
    raw = bytearray(encode_event(event, "avro"))
    position = data.draw(st.integers(5, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_event(bytes(raw))
    except DecodeError:
        return
    assert decode_event(encode_event(decoded, "avro")) == decoded


def test_every_truncation_of_avro_is_rejected() -> None:
    raw = _valid_avro_event()
    for length in range(1, len(raw)):
        with pytest.raises(DecodeError):
            decode_event(raw[:length])


def _valid_avro_event() -> bytes:
    return encode_event(BehaviourEvent(**VALID_EVENT), "avro")


def _table_decode(obj: dict[str, Any]) -> BehaviourEvent:
    """The slow, table-driven reading of an event, to check the hand-written fast path."""
    event = BehaviourEvent(*codec._read_fields(obj, codec._EVENT_FIELDS, DEFAULT_LIMITS))
    if event.item_id is None and event.type in ITEM_EVENT_TYPES:
        raise DecodeError(f"required for event type {event.type!r}", "item_id")
    return event


def _outcome(decode: Any, arg: Any) -> Any:
    try:
        return decode(arg)
    except DecodeError as err:
        return ("error", str(err))


@given(name=st.sampled_from(EVENT_FIELD_NAMES), value=JSON_VALUES)
@example(name="ts", value=1.7e12)
@example(name="position", value=True)
@example(name="progress", value=1)
@example(name="type", value="session_start")
@example(name="item_id", value=None)
@example(name="device", value="x" * 257)
def test_one_bad_field_is_named_or_the_value_is_kept(name: str, value: Any) -> None:
    obj = {**VALID_EVENT, name: value}
    raw = orjson.dumps(obj)
    assert _outcome(decode_event, raw) == _outcome(_table_decode, obj)
    try:
        event = decode_event(raw)
    except DecodeError as err:
        assert err.field == name
        return
    kept = getattr(event, name)
    assert kept == value
    assert type(kept) is (float if name == "progress" and value is not None else type(value))


@given(dropped=st.sets(st.sampled_from(EVENT_FIELD_NAMES)))
def test_missing_fields_name_the_first_required_one(dropped: set[str]) -> None:
    obj = {name: value for name, value in VALID_EVENT.items() if name not in dropped}
    missing_required = [name for name in REQUIRED_EVENT_FIELDS if name in dropped]
    if missing_required:
        err = _decode_error(_json(obj))
        assert (err.field, err.reason) == (missing_required[0], "missing required field")
    elif "item_id" in dropped:
        assert str(_decode_error(_json(obj))) == "item_id: required for event type 'click'"
    else:
        event = decode_event(_json(obj))
        for name in EVENT_FIELD_NAMES:
            assert getattr(event, name) == (None if name in dropped else VALID_EVENT[name])


@given(extra=st.dictionaries(TEXT.filter(lambda key: key not in VALID_EVENT), JSON_VALUES))
def test_unknown_extra_fields_are_ignored(extra: dict[str, Any]) -> None:
    assert decode_event(_json({**extra, **VALID_EVENT})) == BehaviourEvent(**VALID_EVENT)


def _avro_wide_ints(record: dict[str, Any]) -> bytes:
    """Frame an event written with every Avro int widened to long.

    Avro ints and longs share one varint encoding, so this is how a buggy or hostile producer
    gets an out-of-range "int" past a writer that would refuse it.
    """
    schema = orjson.loads(
        (Path(codec.__file__).parent / "BehaviourEvent.avsc")
        .read_bytes()
        .replace(b'"int"', b'"long"')
    )
    out = io.BytesIO()
    out.write(_AVRO_EVENT_HEADER)
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


@given(
    position=LONGS,
    dwell_ms=LONGS,
    local_hour=st.integers(-(2**31), INT_MAX),
    progress=st.floats(),
    ts=LONGS,
)
@example(position=0, dwell_ms=0, local_hour=0, progress=math.nan, ts=1)
@example(position=0, dwell_ms=0, local_hour=0, progress=math.inf, ts=1)
def test_avro_numbers_out_of_range_are_named(
    position: int, dwell_ms: int, local_hour: int, progress: float, ts: int
) -> None:
    numbers = {
        "position": position,
        "dwell_ms": dwell_ms,
        "local_hour": local_hour,
        "progress": progress,
        "ts": ts,
    }
    raw = _avro_wide_ints({**VALID_EVENT, **numbers})
    try:
        event = decode_event(raw)
    except DecodeError as err:
        assert err.field in numbers
        return
    assert 0 <= event.position <= INT_MAX  # type: ignore[operator]
    assert event.dwell_ms >= 0  # type: ignore[operator]
    assert 0 <= event.local_hour <= 23  # type: ignore[operator]
    assert 0.0 <= event.progress <= 1.0  # type: ignore[operator]
    assert 0 < event.ts < 2**53


# --- exact error messages --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"event_id": None}, "event_id: expected string, got null"),
        ({"ts": "1700000000000"}, "ts: expected integer epoch milliseconds, got str"),
        ({"ts": True}, "ts: expected integer epoch milliseconds, got bool"),
        ({"ts": 1.7e12}, "ts: expected integer epoch milliseconds, got float"),
        ({"ts": 0}, "ts: must be > 0 and < 2**53 epoch milliseconds, got 0"),
        ({"ts": 2**53}, f"ts: must be > 0 and < 2**53 epoch milliseconds, got {2**53}"),
        ({"position": True}, "position: expected integer, got bool"),
        ({"position": -1}, "position: must be >= 0, got -1"),
        ({"position": 2**31}, f"position: must be <= {INT_MAX}, got {2**31}"),
        ({"dwell_ms": -5}, "dwell_ms: must be >= 0, got -5"),
        ({"dwell_ms": "5"}, "dwell_ms: expected integer, got str"),
        ({"local_hour": 24}, "local_hour: must be <= 23, got 24"),
        ({"local_hour": -1}, "local_hour: must be >= 0, got -1"),
        ({"progress": 1.5}, "progress: must be between 0 and 1, got 1.5"),
        ({"progress": -0.1}, "progress: must be between 0 and 1, got -0.1"),
        ({"progress": "0.5"}, "progress: expected number, got str"),
        ({"progress": False}, "progress: expected number, got bool"),
        ({"event_id": ""}, "event_id: must not be empty"),
        ({"user_id": ""}, "user_id: must not be empty"),
        ({"item_id": ""}, "item_id: must not be empty"),
        ({"user_id": ["u"]}, "user_id: expected string, got list"),
        ({"session_id": {"a": 1}}, "session_id: expected string, got object"),
        ({"device": "x" * 257}, "device: string of 257 characters exceeds max_string_len 256"),
        ({"item_id": None}, "item_id: required for event type 'click'"),
        (
            {"type": "foo"},
            "type: unknown event type 'foo', expected one of click, completion, drop_off, "
            "hover, impression, pause, play, scroll_past, session_start",
        ),
        ({"type": 3}, "type: expected string, got int"),
    ],
)
def test_event_error_messages(changes: dict[str, Any], message: str) -> None:
    obj = {**VALID_EVENT, **changes}
    assert str(_decode_error(_json(obj))) == message
    # The Avro path ends in the same checks, wherever Avro can carry the value at all.
    if all(type(value) in (int, str) for value in changes.values()):
        try:
            raw = _avro("BehaviourEvent", obj)
        except (TypeError, ValueError):  # fastavro cannot write e.g. a str into a long
            return
        assert str(_decode_error(raw)) == message


@pytest.mark.parametrize("name", REQUIRED_EVENT_FIELDS)
def test_missing_required_field(name: str) -> None:
    obj = {key: value for key, value in VALID_EVENT.items() if key != name}
    err = _decode_error(_json(obj))
    assert (err.field, err.reason, str(err)) == (
        name,
        "missing required field",
        f"{name}: missing required field",
    )


def test_boundary_values_are_accepted() -> None:
    obj = {
        **VALID_EVENT,
        "device": "x" * 256,
        "ts": 2**53 - 1,
        "position": 0,
        "progress": 1,
        "local_hour": 23,
    }
    event = decode_event(_json(obj))
    assert (event.device, event.ts, event.position, event.progress, event.local_hour) == (
        "x" * 256,
        2**53 - 1,
        0,
        1.0,
        23,
    )
    assert type(event.progress) is float
    session_start = decode_event(b'{"event_id":"e","user_id":"u","type":"session_start","ts":1}')
    assert session_start == BehaviourEvent("e", "u", "session_start", 1)


def test_nan_and_infinity_are_rejected() -> None:
    assert str(_decode_error(_avro("BehaviourEvent", {**VALID_EVENT, "progress": math.nan}))) == (
        "progress: must be a finite number, got nan"
    )
    page = {
        "user_id": "u",
        "session_id": "s",
        "recommendation_id": "r",
        "trigger_event_id": "e",
        "generated_at": 1,
        "rows": [{"row_id": "r", "title": "t", "items": [{"item_id": "i", "score": math.inf}]}],
    }
    assert str(_decode_error(_avro("Page", page), decode_page)) == (
        "rows[0].items[0].score: must be a finite number, got inf"
    )
    # JSON has no NaN; orjson refuses the literal and numbers that overflow to infinity.
    for raw in (b'{"progress": NaN}', b'{"progress": 1e400}', b'{"progress": Infinity}'):
        err = _decode_error(raw)
        assert err.field is None
        assert err.reason.startswith("not valid JSON: ")


def test_message_size_limit() -> None:
    raw = _json({**VALID_EVENT, "pad": "x" * 70_000})
    assert str(_decode_error(raw)) == (
        f"message of {len(raw)} bytes exceeds max_message_bytes 65536"
    )
    assert decode_event(raw, limits=CodecLimits(max_message_bytes=100_000)).event_id == "e-1"


def test_custom_limits_apply() -> None:
    tight = CodecLimits(max_string_len=3)
    assert str(_decode_error(_json(VALID_EVENT), limits=tight)) == (
        "row_id: string of 8 characters exceeds max_string_len 3"
    )


def test_malformed_json() -> None:
    err = _decode_error(b'{"event_id": ')
    assert err.field is None
    assert str(err).startswith("not valid JSON: ")
    assert _decode_error(b'{"a": "\xff"}').reason.startswith("not valid JSON: ")


@pytest.mark.parametrize(("raw", "kind"), [(b"[1, 2]", "list"), (b'"x"', "str"), (b"3", "int")])
def test_top_level_must_be_an_object(raw: bytes, kind: str) -> None:
    err = _decode_error(raw, content_type="application/json")
    assert (err.field, str(err)) == (None, f"top level must be a JSON object, got {kind}")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "message is empty"),
        (
            b"hello",
            "cannot tell JSON from Avro: first byte is 0x68, expected '{' (JSON) or 0x00 "
            "(Confluent Avro); set the content type if the producer cannot",
        ),
        (
            b"  [1]",
            "cannot tell JSON from Avro: first byte is 0x5b, expected '{' (JSON) or 0x00 "
            "(Confluent Avro); set the content type if the producer cannot",
        ),
        (b"\x00\x00", "not valid Avro: shorter than the 5-byte Confluent wire header"),
        (
            b"\x00\x00\x00\x00\x03" + b"\x00" * 10,
            "wrong Avro schema id 3 (Page), expected 1 (BehaviourEvent)",
        ),
        (
            b"\x00\x00\x00\x00\x63",
            "wrong Avro schema id 99 (unknown), expected 1 (BehaviourEvent)",
        ),
        (_valid_avro_event() + b"\x00", "not valid Avro for BehaviourEvent: 1 trailing bytes"),
    ],
)
def test_framing_errors(raw: bytes, message: str) -> None:
    err = _decode_error(raw)
    assert (err.field, str(err)) == (None, message)


def test_a_page_fed_to_the_event_decoder_names_both_schemas() -> None:
    raw = encode_page(Page("u", "s", "r", "e", 1, ()), "avro")
    assert str(_decode_error(raw)) == "wrong Avro schema id 3 (Page), expected 1 (BehaviourEvent)"


def test_corrupt_avro_body_is_a_decode_error() -> None:
    err = _decode_error(_AVRO_EVENT_HEADER + b"\x06\xff\xfe\xfd")
    assert err.reason.startswith("not valid Avro for BehaviourEvent: ")


def test_format_detection() -> None:
    event = BehaviourEvent(**VALID_EVENT)
    json_raw, avro_raw = encode_event(event, "json"), encode_event(event, "avro")
    assert decode_event(b" \r\n\t" + json_raw) == event
    assert decode_event(json_raw, content_type="application/json; charset=utf-8") == event
    assert decode_event(avro_raw, content_type=b"application/avro") == event
    # The content type wins over the first byte.
    err = _decode_error(json_raw, content_type="application/avro")
    assert str(err) == "not valid Avro: magic byte is 0x7b, expected 0x00"
    err = _decode_error(avro_raw, content_type="application/json")
    assert err.reason.startswith("not valid JSON: ")
    err = _decode_error(json_raw, content_type="text/plain")
    assert str(err) == (
        "unsupported content type 'text/plain', expected 'application/json' or 'application/avro'"
    )


# --- catalog items, pages, alerts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"title": "x"}, "item_id: missing required field"),
        ({"item_id": ""}, "item_id: must not be empty"),
        ({"item_id": "i", "genres": "drama"}, "genres: expected list, got str"),
        ({"item_id": "i", "genres": ["drama", 3]}, "genres[1]: expected string, got int"),
        (
            {"item_id": "i", "artworks": ["a" * 300]},
            "artworks[0]: string of 300 characters exceeds max_string_len 256",
        ),
        (
            {"item_id": "i", "genres": ["g"] * 65},
            "genres: list of 65 items exceeds max_list_len 64",
        ),
        ({"item_id": "i", "duration_s": -1}, "duration_s: must be >= 0, got -1"),
        ({"item_id": "i", "duration_s": "60"}, "duration_s: expected integer, got str"),
        ({"item_id": "i", "duration_s": 60.0}, "duration_s: expected integer, got float"),
        (
            {"item_id": "i", "artworks": ["a", "b"], "artwork_styles": ["closeup"]},
            "artwork_styles: expected one style per artwork (2), got 1",
        ),
    ],
)
def test_catalog_item_error_messages(obj: dict[str, Any], message: str) -> None:
    assert str(_decode_error(_json(obj), decode_catalog_item)) == message


def test_catalog_item_defaults_and_nulls() -> None:
    raw = b'{"item_id": "i", "title": null, "genres": null, "new_field": [1]}'
    assert decode_catalog_item(raw) == CatalogItem("i")
    assert decode_catalog_item(b'{"item_id":"i","genres":["g"]}').genres == ("g",)


def test_nested_page_errors_carry_the_path() -> None:
    page = Page("u", "s", "r", "e", 1, (PageRow("a", "A", (PageItem("i", 1.0),)),))
    obj = orjson.loads(encode_page(page))
    obj["rows"][0]["items"][0]["score"] = "high"
    assert str(_decode_error(_json(obj), decode_page)) == (
        "rows[0].items[0].score: expected number, got str"
    )
    del obj["rows"][0]["title"]
    assert str(_decode_error(_json(obj), decode_page)) == "rows[0].title: missing required field"
    obj["rows"] = [1]
    assert str(_decode_error(_json(obj), decode_page)) == "rows[0]: expected object, got int"


def test_churn_alert_errors() -> None:
    obj = orjson.loads(encode_churn_alert(ChurnAlert("a", "u", "s", 0.5, ("idle",), 1)))
    obj["reasons"] = ["idle", None]
    assert str(_decode_error(_json(obj), decode_churn_alert)) == (
        "reasons[1]: expected string, got null"
    )
    assert decode_churn_alert(_json({**obj, "reasons": [], "risk": 1})).risk == 1.0


def test_output_decoders_use_looser_limits() -> None:
    letter = DeadLetter(b"x" * 65536, "too big", headers={"h": "v" * 1000})
    assert decode_dead_letter(encode_dead_letter(letter)) == letter
    assert OUTPUT_LIMITS.max_message_bytes > DEFAULT_LIMITS.max_message_bytes
    with pytest.raises(DecodeError, match=r"headers\.h: string of 1000 characters"):
        decode_dead_letter(encode_dead_letter(letter), limits=CodecLimits(10**6))


# --- the validator and the .avsc files agree --------------------------------------------------


def _render(avro_type: Any) -> str:
    """Render an Avro type the way the validator tables spell it, without the null branch."""
    if isinstance(avro_type, str):
        return avro_type.removeprefix("insession.")
    if isinstance(avro_type, list):
        return " | ".join(_render(branch) for branch in avro_type if branch != "null")
    if avro_type["type"] == "array":
        return f"array<{_render(avro_type['items'])}>"
    if avro_type["type"] == "map":
        return f"map<{_render(avro_type['values'])}>"
    return str(avro_type["name"]).removeprefix("insession.")


_RECORDS = {
    "BehaviourEvent": ("BehaviourEvent", BehaviourEvent),
    "CatalogItem": ("CatalogItem", CatalogItem),
    "Page": ("Page", Page),
    "PageRow": ("Page", PageRow),
    "PageItem": ("Page", PageItem),
    "ChurnAlert": ("ChurnAlert", ChurnAlert),
    "DeadLetter": ("DeadLetter", DeadLetter),
}


@pytest.mark.parametrize("record_name", sorted(_RECORDS))
def test_validator_tables_match_the_avsc(record_name: str) -> None:
    file_name, message_class = _RECORDS[record_name]
    schema = load_schema(file_name)["__named_schemas"][f"insession.{record_name}"]
    from_avsc = [(f["name"], _render(f["type"]), "default" not in f) for f in schema["fields"]]
    from_table = [(f.name, f.avro_type, f.required) for f in codec._RECORD_FIELDS[record_name]]
    assert from_table == from_avsc
    assert [f.name for f in dataclasses.fields(message_class)] == [row[0] for row in from_avsc]
    for avsc_field in schema["fields"]:
        if isinstance(avsc_field["type"], list):  # optional: ["null", T] with default null
            assert avsc_field["type"][0] == "null"
            assert avsc_field["default"] is None


@pytest.mark.parametrize("avsc_field", load_schema("BehaviourEvent")["fields"], ids=str)
def test_hand_validator_knows_every_avsc_field(avsc_field: dict[str, Any]) -> None:
    name, required = avsc_field["name"], "default" not in avsc_field
    # An object is the wrong type for every field, so only an unknown field would pass.
    assert _decode_error(_json({**VALID_EVENT, name: {"x": 1}})).field == name
    absent = {key: value for key, value in VALID_EVENT.items() if key != name}
    if name == "item_id":  # optional in the schema, required by the event type
        absent["type"] = "session_start"
    if required:
        assert str(_decode_error(_json(absent))) == f"{name}: missing required field"
        assert _decode_error(_json({**VALID_EVENT, name: None})).field == name
    else:
        assert getattr(decode_event(_json(absent)), name) is None
        assert getattr(decode_event(_json({**absent, name: None})), name) is None


def test_every_schema_is_in_the_insession_namespace_and_cached() -> None:
    for name in SCHEMA_IDS:
        schema = load_schema(name)
        assert schema["name"] == f"insession.{name}"
        assert load_schema(name) is schema
    with pytest.raises(ValueError, match="unknown schema 'Nope'"):
        load_schema("Nope")


# --- the error type and the layer contract ---------------------------------------------------


def test_decode_error_shape() -> None:
    err = DecodeError("must not be empty", "user_id")
    assert (err.field, err.reason, str(err)) == ("user_id", "must not be empty", err.args[0])
    assert str(err) == "user_id: must not be empty"
    assert str(DecodeError("message is empty")) == "message is empty"
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), copy.field, copy.reason) == (DecodeError, "user_id", "must not be empty")


def test_codec_imports_no_kafka_faust_or_redis() -> None:
    code = (
        "import sys, schemas.codec; "
        "bad = {'faust', 'mode', 'aiokafka', 'confluent_kafka', 'redis'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_page_json_is_orjsons_own_rendering_of_the_dataclasses() -> None:
    """`encode_page` writes a dict of the page for speed: byte for byte what orjson writes
    for the dataclasses, so a field added to Page, PageRow or PageItem fails here."""
    rows = (
        PageRow("top", "Top picks", (PageItem("a", 0.5, "a-1"), PageItem("é", 1e-6, None))),
        PageRow("empty", "Nothing", ()),
    )
    for page in (
        Page("u1", "s1", "r1", "e1", 1_700_000_000_000, rows, "holdout", ("e0", "e00")),
        Page("u2", "s2", "r2", "e2", 5, ()),
    ):
        assert encode_page(page) == orjson.dumps(page)
