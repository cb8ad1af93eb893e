"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_values(width: int = 4, leaves: int = 30) -> st.SearchStrategy[Any]:
    """Any JSON value whose numbers fit in 64 bits (past them yajl refuses: "integer
    overflow"; -2**63 too), containers up to ``width`` items, ``leaves`` leaves."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63) + 1, 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda inner: (
            st.lists(inner, max_size=width) | st.dictionaries(st.text(max_size=8), inner, max_size=width)
        ),
        max_leaves=leaves,
    )
