"""The service's state store: :func:`open_state` opens the one named by ``state_url``.

* :mod:`serving.state.contract` — the interface (:class:`StateStore`), :class:`Contacts`, and what every
  store shares; its docstring says what each part of the state is for.
* :mod:`serving.state.sqlite` — :class:`SQLiteState`, the default: one SQLite file shared by the worker
  processes of one machine.
* :mod:`serving.state.redis` — :class:`~serving.state.redis.RedisState`: one Redis database shared by
  services on several machines; imported only when a ``redis://`` URL is opened, so that redis-py is not
  loaded otherwise.

Both stores import from :mod:`serving.state.contract` alone, never from this package or each other.
"""

from __future__ import annotations

from nbm.config import REDIS_SCHEMES
from serving.state.contract import HOUR_NS, LOSS_TYPES, PLANNED_GRACE_NS, Contacts, StateStore, items_json
from serving.state.sqlite import SQLiteState

__all__ = ["HOUR_NS", "LOSS_TYPES", "PLANNED_GRACE_NS", "Contacts", "SQLiteState", "StateStore", "items_json",
           "open_state"]


def open_state(url: str) -> StateStore:
    """The state store named by ``state_url``: ``sqlite:///PATH`` or ``redis://HOST:PORT/DB`` (also ``rediss://``)."""
    if url.startswith("sqlite:///"):
        return SQLiteState(url.removeprefix("sqlite:///"))
    if url.startswith(REDIS_SCHEMES):
        from serving.state.redis import RedisState

        return RedisState(url)
    raise ValueError(f"unsupported state_url {url!r}: expected sqlite:///PATH or redis://HOST:PORT/DB")
