"""The dotted-path shortcut in data.select agrees with the JSONPath library."""

from __future__ import annotations

from typing import Any

import jsonpath
from hypothesis import given
from hypothesis import strategies as st

from flowweaver.domain.data import select
from flowweaver.errors import TaskInputError

keys = st.sampled_from(["a", "b", "c", "_d", "e1"])
leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=3)
documents = st.recursive(
    leaves,
    lambda children: st.dictionaries(keys, children, max_size=4) | st.lists(children, max_size=3),
    max_leaves=12,
)


@given(
    document=st.dictionaries(keys, documents, max_size=4),
    path=st.lists(keys, min_size=1, max_size=4),
)
def test_dotted_paths_select_what_the_library_selects(
    document: dict[str, Any], path: list[str]
) -> None:
    """For `$.a.b` paths the shortcut returns the library's single match, or raises on none."""
    text = "$." + ".".join(path)
    matches = jsonpath.findall(text, document)
    if matches:
        assert select(text, document) == matches[0]
    else:
        try:
            select(text, document)
        except TaskInputError:
            return
        raise AssertionError(f"{text} should match nothing in {document!r}")
