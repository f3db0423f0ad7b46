"""``launder.module_pids``: the persistent ids that hand a legacy torch module class to the pickle.

Its column-at-a-time short cut (every id a non-empty tuple, none starting with ``'module'``) must pick
exactly the ids the per-id test :func:`legacy_module_class` picks. The real loader's behaviour for such
ids is pinned by the ``legacy-module-pid`` samples of tests/sink_samples.py.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from picklewarden.knowledge.launder import legacy_module_class, module_pids
from picklewarden.pickle.program import Persistent

_STORAGE = ("storage", object(), "0", "cpu", 4)
pids = st.sampled_from(
    [
        _STORAGE,
        ("module", object(), "src.py", "source"),
        ("module",),
        ("module", None),
        ("storage",),
        (),
        ["module", object()],
        "module",
        None,
        (["unhashable"], 1),
        ("MODULE", object()),
    ]
)


def _nodes(values: list[Any]) -> list[Persistent]:
    return [Persistent(i, i, value) for i, value in enumerate(values)]


@given(values=st.lists(pids, max_size=12))
def test_module_pids_picks_what_legacy_module_class_picks(values: list[Any]) -> None:
    nodes = _nodes(values)
    assert list(module_pids(nodes)) == [n for n in nodes if legacy_module_class(n) is not None]


def test_a_state_dict_of_storage_ids_has_no_module_id() -> None:
    nodes = _nodes([_STORAGE] * 1000)
    assert list(module_pids(nodes)) == []
    with_module = [*nodes, *_nodes([("module", int, "f.py", "")])]
    assert [n.pid[0] for n in module_pids(with_module)] == ["module"]
