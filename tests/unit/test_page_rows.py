"""A page's rows built slot by slot equal the dataclasses' own."""

from __future__ import annotations

import numpy as np
import pytest

from processors.page_builder import ServedFeatures, _page_items, _page_rows
from schemas.messages import PageItem, PageRow


def test_page_rows_equal_the_dataclasses() -> None:
    items = _page_items(["a", "b", "c"], [0.5, 0.25, 1e-6], ["x", None, "z"])
    row_items = [tuple(items[:2]), tuple(items[2:]), ()]
    ids, titles = ["r1", "r2", "r3"], ["Row 1", "Row 2", "Row 3"]
    rows = _page_rows(ids, titles, row_items)
    expected = tuple(PageRow(*fields) for fields in zip(ids, titles, row_items, strict=True))
    assert rows == expected
    assert type(rows) is tuple
    assert [type(row) for row in rows] == [PageRow] * 3
    assert [hash(row) for row in rows] == [hash(row) for row in expected]
    assert repr(rows) == repr(expected)
    assert rows[0].items[1] == PageItem("b", 0.25, None)
    assert _page_rows([], [], []) == ()
    with pytest.raises(ValueError):
        _page_rows(ids, titles[:2], row_items)
    with pytest.raises(AttributeError):
        rows[0].title = "x"  # type: ignore[misc]  # still frozen


def test_served_rows_for_learning_hold_the_served_values() -> None:
    features = np.array([[0.1, -2.5, 3.0], [1.0 / 3.0, 0.0, 7.0]], dtype=np.float32)
    served = ServedFeatures(("a", "b"), features)
    row = served.row_of("b")
    assert row is not None and row.dtype == np.float64
    assert row.tolist() == served.features_of("b")
    assert served.row_of("c") is None and served.features_of("c") is None
