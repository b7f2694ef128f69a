"""Where ``nbm recommend`` writes its decisions: one JSON-lines file, one Parquet file, or a directory of partitions.

``--out FILE.jsonl`` (any name not ending ``.parquet``): one JSON line per decision, in the ``/recommend``
answer's shape plus ``now`` — the contract's output. ``--out FILE.parquet`` (or ``--format parquet``): the same
decisions as a Parquet table (:data:`SCHEMA`), ``now`` and ``send_at`` typed as UTC timestamps.

``--out DIR/`` (a trailing slash, or an existing directory): a directory of partitions, ``part-00000.jsonl``,
``part-00001.jsonl``… (``.parquet`` with ``--format parquet``), each written by whoever decided it — on a Dask
cluster, the worker, so the decisions never pass through the client (the directory must then be one every worker
can write: a shared file system). Read in name order, the partitions hold the decisions in the order the one
file would. A partition is written under a temporary name and renamed, and ``_SUCCESS`` (the
count of decisions and partitions, as JSON) is written last: a reader that finds ``_SUCCESS`` reads a complete
run. Partitions of an earlier run in the directory are removed first; nothing else there is touched.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nbm.errors import UnusableInputError, UsageError

FORMATS = ("jsonl", "parquet")
PART = "part-{index:05d}.{format}"
SUCCESS = "_SUCCESS"


def _item(send_at: pa.DataType) -> pa.StructType:
    return pa.struct([("message_id", pa.string()), ("channel", pa.string()), ("send_at", send_at),
                      ("score", pa.float64()), ("propensity", pa.float64()), ("propensity_error", pa.float64())])


def _schema(time: pa.DataType) -> pa.Schema:
    return pa.schema([
        ("decision_id", pa.string()), ("user_id", pa.string()), ("model_version", pa.string()), ("now", time),
        ("items", pa.list_(_item(time))),
        ("suppressed", pa.list_(pa.struct([("message_id", pa.string()), ("channel", pa.string()),
                                          ("reason", pa.string())]))),
        ("reason", pa.string()), ("arm", pa.string()), ("experiment", pa.string())])


SCHEMA = _schema(pa.timestamp("ns", tz="UTC"))
"""The Parquet output's columns: the JSON line's keys, with ``now`` and ``items.send_at`` UTC timestamps; ``reason``
is null for a decision with items, ``arm`` and ``experiment`` outside an experiment, ``propensity_error`` for an
item whose propensity is exact."""
_AS_TEXT = _schema(pa.string())     # the lines' own types (ISO-8601 strings), cast to SCHEMA


class BatchOutput:
    """``nbm recommend``'s ``--out`` (and ``--format``): :meth:`encode` a piece of decisions, :meth:`writer` for
    one file, or :meth:`write_part` for a partition; :meth:`prepare` before, :meth:`finish` after."""

    def __init__(self, out: Path | str, format: str | None = None, partitioned: bool | None = None) -> None:
        """``partitioned``: a directory of partitions (default: when ``out`` ends with a slash or is a directory)."""
        text = str(out)
        self.path = Path(out)
        self.partitioned = partitioned if partitioned is not None else \
            text.endswith(("/", os.sep)) or self.path.is_dir()
        suffix = "" if self.partitioned else self.path.suffix.lower()
        named = "parquet" if suffix == ".parquet" else "jsonl" if suffix in (".jsonl", ".json", ".ndjson") else None
        if format is None:
            format = named or "jsonl"
        if format not in FORMATS:
            raise UsageError(f"`--format`: {format!r} is not one of {', '.join(FORMATS)}")
        if named is not None and named != format:
            raise UsageError(f"`--out` {str(self.path)!r} names a {named} file but `--format` is {format}")
        self.format = format

    def __repr__(self) -> str:
        return f"BatchOutput({str(self.path)!r}, {self.format!r}, partitioned={self.partitioned})"

    def describe(self) -> str:
        return f"{self.path}/ ({self.format} partitions)" if self.partitioned else str(self.path)

    def prepare(self) -> None:
        """Make the output's directory; for partitions, remove an earlier run's (and its ``_SUCCESS``). Partition
        files without ``_SUCCESS`` beside them are not an earlier complete run's (an interrupted run, or someone
        else's files — a data directory's event parts): refused, never removed."""
        if not self.partitioned:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"`--out`: {str(self.path)!r} is a file, not a directory for partitions")
        self.path.mkdir(parents=True, exist_ok=True)
        old = [*self.path.glob("part-*.jsonl"), *self.path.glob("part-*.parquet")]
        if old and not (self.path / SUCCESS).exists():
            raise UsageError(f"`--out`: {str(self.path)!r} holds {len(old)} part-* file(s) but no {SUCCESS}: not the "
                             "output of a complete `nbm recommend` run, so they are left alone; remove them or choose "
                             "another directory")
        for path in [self.path / SUCCESS, *old]:
            path.unlink(missing_ok=True)

    def encode(self, lines: list[dict]):
        """Decisions as this output holds them: JSON-lines text, or an Arrow table."""
        if self.format == "jsonl":
            return "".join(json.dumps(line) + "\n" for line in lines)
        return pa.Table.from_pylist(lines, schema=_AS_TEXT).cast(SCHEMA)

    @staticmethod
    def join(pieces: list):
        """Encoded pieces as one (in order)."""
        if pieces and isinstance(pieces[0], pa.Table):
            return pa.concat_tables(pieces)
        return "".join(pieces) if pieces else ""

    def write_part(self, index: int, lines_or_piece) -> int:
        """Partition ``index`` written (under a temporary name, then renamed); its number of decisions."""
        piece = lines_or_piece if isinstance(lines_or_piece, (str, pa.Table)) else self.encode(lines_or_piece)
        if not self.path.is_dir():          # a worker on a machine that does not see the client's directory
            import socket

            raise UnusableInputError(f"`--out` {str(self.path)!r} is not a directory on {socket.gethostname()}: a "
                                     "cluster's workers write the partitions, so it must be on storage they all share")
        path = self.path / PART.format(index=index, format=self.format)
        temporary = self.path / f".{path.name}.{uuid.uuid4().hex}.tmp"
        try:
            if isinstance(piece, pa.Table):
                pq.write_table(piece, temporary)
            else:
                temporary.write_text(piece)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return piece.num_rows if isinstance(piece, pa.Table) else piece.count("\n")

    def writer(self) -> _FileWriter:
        """A writer of the one output file: ``write(piece)`` in order, then ``close()`` (a context manager)."""
        return _FileWriter(self.path, self.format)

    def finish(self, decisions: int, parts: int) -> None:
        """``_SUCCESS`` in a directory of partitions: the run is complete."""
        if self.partitioned:
            (self.path / SUCCESS).write_text(json.dumps({"decisions": decisions, "parts": parts,
                                                         "format": self.format}) + "\n")


def read_decisions(path: Path | str) -> list[dict]:
    """The decisions of an output — a JSON-lines or Parquet file, or a directory of partitions (complete: with
    ``_SUCCESS``) read in name order — as JSON lines (``now`` and ``send_at`` ISO-8601 strings, the keys a line
    has), in order."""
    path = Path(path)
    if path.is_dir():
        if not (path / SUCCESS).exists():
            raise UsageError(f"{str(path)!r} has no {SUCCESS}: not a complete run of `nbm recommend`")
        files = sorted([*path.glob("part-*.jsonl"), *path.glob("part-*.parquet")])
        return [line for file in files for line in read_decisions(file)]
    if path.suffix.lower() != ".parquet":
        return [json.loads(line) for line in path.read_text().splitlines()]
    from decision.answer import iso_utc

    out = []
    for row in pq.read_table(path).cast(_AS_NS).to_pylist():
        row["now"] = iso_utc(row["now"])
        for item in row["items"]:
            item["send_at"] = iso_utc(item["send_at"])
            if item["propensity_error"] is None:
                del item["propensity_error"]
        for key in ("reason", "arm", "experiment"):
            if row[key] is None:
                del row[key]
        out.append(row)
    return out


_AS_NS = _schema(pa.int64())        # the Parquet table's instants as int64 ns, to read back


class _FileWriter:
    """Writes under a temporary name beside ``path``, renamed to ``path`` when closed after success: a run that
    fails leaves no file that looks complete (and an earlier run's file stays as it was)."""

    def __init__(self, path: Path, format: str) -> None:
        self.path, self.format = path, format
        self._temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        self._text = self._temporary.open("w") if format == "jsonl" else None
        self._parquet: pq.ParquetWriter | None = None

    def write(self, piece) -> None:
        if self._text is not None:
            self._text.write(piece)
            return
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._temporary, SCHEMA)
        self._parquet.write_table(piece)

    def close(self, complete: bool = True) -> None:
        try:
            if self._text is not None:
                self._text.close()
            elif self._parquet is not None:
                self._parquet.close()
            elif complete:                               # no decisions: still a readable, empty table
                pq.write_table(SCHEMA.empty_table(), self._temporary)
            if complete:
                os.replace(self._temporary, self.path)
        finally:
            self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> _FileWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(complete=kind is None)
