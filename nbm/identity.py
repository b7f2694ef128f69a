"""Identity resolution: identifiers joined by ``links`` collapse to one canonical ``user_id``.

The links form an undirected graph; each connected component is one person. Its canonical id is the
``users`` table's id when the component holds one, the lexicographically smallest ``users`` id when it
holds several (the others are reported and merged into it), and otherwise the lexicographically
smallest identifier of the component — deterministic whatever the order of the rows.

Vectorised with ``pd.factorize`` and ``scipy.sparse.csgraph.connected_components``: 1M links resolve in
about a second (``benchmarks/identity.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass(frozen=True)
class IdentityResolution:
    """The outcome of resolving links.

    Attributes
    ----------
    canonical
        Canonical ``user_id`` of every identifier that appears in a link (index: identifier). Identifiers
        in no link are their own canonical id and are not listed.
    merged_users
        ``users`` ids that share a component with a smaller ``users`` id (index) → the id they merge into.
    n_components
        People found among the linked identifiers.
    identifiers_per_person
        How many identifiers each linked person has (index: canonical id).
    """

    canonical: pd.Series
    merged_users: pd.Series
    n_components: int
    identifiers_per_person: pd.Series

    def apply(self, ids: pd.Series) -> pd.Series:
        """Canonical id of each identifier in ``ids`` (vectorised; unlinked ids are returned as they are)."""
        if not len(self.canonical):
            return ids
        mapped = ids.map(self.canonical)
        return mapped.fillna(ids).astype(ids.dtype)

    @classmethod
    def empty(cls) -> IdentityResolution:
        none = pd.Series(dtype="str")
        return cls(none, none, 0, pd.Series(dtype="int64"))


def resolve_identities(links: pd.DataFrame, user_ids: pd.Series) -> IdentityResolution:
    """Collapse the identifiers connected by ``links`` (columns ``identifier_a``, ``identifier_b``).

    Parameters
    ----------
    links
        Valid link rows (no missing identifiers). Self-links, repeated links, chains and cycles are fine.
    user_ids
        The ``users`` table's ids, which win as canonical ids.
    """
    if links is None or not len(links):
        return IdentityResolution.empty()
    ends = pd.concat([links["identifier_a"], links["identifier_b"]], ignore_index=True).astype("str")
    codes, names = pd.factorize(ends, sort=True)          # code order = lexicographic order
    n, m = len(names), len(links)
    graph = coo_matrix((np.ones(m, dtype=np.int8), (codes[:m], codes[m:])), shape=(n, n))
    n_components, component = connected_components(graph, directed=False)

    # pyarrow's hash join: pandas' isin on Arrow strings loops in Python.
    is_user = pc.is_in(pa.array(np.asarray(names, dtype=object), type=pa.string()),
                       value_set=pa.array(user_ids.dropna().to_numpy(dtype=object), type=pa.string()))
    is_user = is_user.to_numpy(zero_copy_only=False)
    # Users' ids rank before every other identifier; within each group, lexicographic order.
    rank = np.arange(n) + np.where(is_user, 0, n)
    best = np.full(n_components, np.iinfo(np.int64).max)
    np.minimum.at(best, component, rank)
    winner = np.where(best >= n, best - n, best)
    canonical_code = winner[component]
    canonical = pd.Series(np.asarray(names, dtype=object)[canonical_code], index=pd.Index(names, name="identifier"),
                          dtype="str", name="user_id")
    merged = is_user & (canonical_code != np.arange(n))
    per_person = pd.Series(np.bincount(component, minlength=n_components), dtype="int64")
    per_person.index = pd.Index(np.asarray(names, dtype=object)[winner], name="user_id")
    return IdentityResolution(
        canonical=canonical,
        merged_users=canonical[merged],
        n_components=int(n_components),
        identifiers_per_person=per_person,
    )
