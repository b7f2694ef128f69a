"""Identity resolution against hand-made cases and a naive union-find reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from nbm.dataset import build_dataset
from nbm.identity import resolve_identities
from tests.nbm.conftest import NOW


def _links(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["identifier_a", "identifier_b"], dtype="str")


def _resolve(pairs, users):
    return resolve_identities(_links(pairs), pd.Series(users, dtype="str"))


def test_chain_collapses_to_the_users_id() -> None:
    result = _resolve([("ck-1", "dev-1"), ("dev-1", "u9")], ["u9"])
    assert result.canonical.to_dict() == {"ck-1": "u9", "dev-1": "u9", "u9": "u9"}
    assert result.n_components == 1 and result.merged_users.empty


def test_cycle_and_repeated_links() -> None:
    result = _resolve([("a", "b"), ("b", "c"), ("c", "a"), ("a", "b")], ["b"])
    assert set(result.canonical) == {"b"}


def test_self_link_is_a_no_op() -> None:
    result = _resolve([("u1", "u1"), ("dev-2", "dev-2")], ["u1"])
    assert result.canonical.to_dict() == {"dev-2": "dev-2", "u1": "u1"}
    assert result.n_components == 2


def test_links_between_unknown_ids_pick_the_smallest_identifier() -> None:
    result = _resolve([("zz", "dev-5"), ("dev-5", "ck-7")], ["u1"])
    assert set(result.canonical) == {"ck-7"}
    shuffled = _resolve([("ck-7", "dev-5"), ("dev-5", "zz")], ["u1"])
    assert shuffled.canonical.sort_index().equals(result.canonical.sort_index())


def test_two_users_in_one_component_merge_into_the_smallest() -> None:
    result = _resolve([("u7", "dev-1"), ("dev-1", "u3")], ["u3", "u7"])
    assert set(result.canonical) == {"u3"}
    assert result.merged_users.to_dict() == {"u7": "u3"}


def test_apply_maps_linked_ids_and_leaves_the_rest() -> None:
    result = _resolve([("u1", "dev-1")], ["u1"])
    ids = pd.Series(["dev-1", "u1", "u2", None], dtype="str")
    mapped = result.apply(ids)
    assert mapped.iloc[:3].tolist() == ["u1", "u1", "u2"] and pd.isna(mapped.iloc[3])


def test_dataset_moves_events_to_the_canonical_user_and_reports_merged_users(tables, config) -> None:
    tables["users"] = pd.concat([tables["users"], pd.DataFrame([["u8", "", "", "", "FR", "1"]],
                                                               columns=tables["users"].columns)], ignore_index=True)
    tables["links"] = _links([("u1", "dev-9"), ("dev-9", "u8")])
    tables["events"].loc[4, "user_id"] = "u8"
    dataset, report = build_dataset(tables, config, now=NOW)
    assert "u8" not in set(dataset.users["user_id"])
    merged = report.problems[report.problems["reason"] == "same_person"]
    assert merged[["table", "row", "key"]].values.tolist() == [["users", 2, "u8"]]
    events = dataset.events.set_index("event_id")
    assert events.loc["e4", "user_id"] == "u1" and events.loc["e4", "source_user_id"] == "dev-9"
    assert events.loc["e5", "user_id"] == "u1" and events.loc["e5", "source_user_id"] == "u8"
    assert report.info["events_under_linked_identifiers"] == 2


def _reference(pairs: list[tuple[str, str]], users: set[str]) -> dict[str, str]:
    """Naive union-find with path halving; canonical = smallest user id, else smallest identifier."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    groups: dict[str, list[str]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    out = {}
    for members in groups.values():
        known = sorted(m for m in members if m in users)
        chosen = known[0] if known else sorted(members)[0]
        out.update({m: chosen for m in members})
    return out


identifiers = st.sampled_from([f"u{i}" for i in range(8)] + [f"dev-{i}" for i in range(8)] + [f"ck-{i}" for i in range(4)])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(pairs=st.lists(st.tuples(identifiers, identifiers), min_size=1, max_size=30),
       users=st.sets(st.sampled_from([f"u{i}" for i in range(8)])))
def test_matches_a_naive_union_find(pairs, users) -> None:
    result = _resolve(pairs, sorted(users))
    assert result.canonical.to_dict() == _reference(pairs, users)


def test_matches_the_reference_on_a_large_seeded_graph() -> None:
    rng = np.random.default_rng(7)
    ids = np.array([f"id{i}" for i in range(3000)], dtype=object)
    pairs = list(zip(ids[rng.integers(0, 3000, 2500)], ids[rng.integers(0, 3000, 2500)]))
    users = set(ids[rng.choice(3000, 800, replace=False)])
    result = _resolve(pairs, sorted(users))
    assert result.canonical.to_dict() == _reference(pairs, users)
