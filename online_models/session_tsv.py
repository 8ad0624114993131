"""Read session-rec style click logs (``SessionId<TAB>ItemId<TAB>Time``) as event-time tuples.

The public session-based recommendation benchmarks (YOOCHOOSE, DIGINETICA, ... as prepared by
the session-rec framework) ship as tab-separated files with a header line and ``Time`` in epoch
seconds. The engine works in event-time milliseconds, so the reader converts once, here, and the
models and evaluators never see a float second.
"""

from __future__ import annotations

from collections.abc import Iterator
from os import PathLike

__all__ = ["read_session_tsv"]


def read_session_tsv(path: str | PathLike[str]) -> Iterator[tuple[str, str, int]]:
    """Yield ``(session_id, item_id, ts_ms)`` for every click of a session-rec TSV file.

    Rows come out in file order (session-rec files are grouped by session, not sorted by time);
    sort by ``ts_ms`` yourself when replaying as a stream. Ids stay strings because the engine's
    ids are opaque strings; ``Time`` (epoch seconds, possibly fractional) becomes integer
    milliseconds, rounded to the nearest millisecond.

    Parameters
    ----------
    path
        A file with a header line naming ``SessionId``, ``ItemId`` and ``Time`` (any column
        order) followed by tab-separated rows. Blank lines are skipped.

    Yields
    ------
    tuple of (str, str, int)
        Session id, item id and event time in epoch milliseconds.

    Raises
    ------
    ValueError
        If the header lacks one of the three columns or a row has too few fields.

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("SessionId\\tItemId\\tTime\\n1\\t214536502\\t1396860669.277\\n")
    >>> list(read_session_tsv(f.name))
    [('1', '214536502', 1396860669277)]
    >>> os.unlink(f.name)
    """
    with open(path, encoding="utf-8") as lines:
        header = lines.readline().rstrip("\r\n").split("\t")
        try:
            session_col = header.index("SessionId")
            item_col = header.index("ItemId")
            time_col = header.index("Time")
        except ValueError as missing:
            message = f"{path}: header {header!r} needs SessionId, ItemId, Time"
            raise ValueError(message) from missing
        width = max(session_col, item_col, time_col) + 1
        for line_no, line in enumerate(lines, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) < width:
                raise ValueError(f"{path}:{line_no}: expected {width} fields, got {len(fields)}")
            yield fields[session_col], fields[item_col], round(float(fields[time_col]) * 1000)
