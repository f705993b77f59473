"""Replay input: plain log lines, Render API dumps (``{"logs": [...]}``) and NDJSON log objects.

The format is detected per input from its first non-blank line. Plain and NDJSON inputs are streamed
line by line (never loaded whole); a Render API dump is one JSON document and is parsed at once.
Bad records are reported as ``InputError`` values in the stream — with file and line — and the rest of
the input goes on.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from stream_triage.errors import InputError
from stream_triage.pipeline.parse import parse_iso_time
from stream_triage.records import LineBatch, RawRecord

BATCH_BYTES = 1 << 20  # plain text is read in blocks of about this size, cut at a line end


@dataclass(slots=True)
class Position:
    """The running 1-based record counter across all inputs of one replay."""

    value: int = 0


def read_inputs(
    paths: Iterable[str], position: Position | None = None, batches: bool = False
) -> Iterator[RawRecord | LineBatch | InputError]:
    """Records from every input in order; ``-`` is standard input.

    With ``batches``, plain-text inputs come as ``LineBatch`` blocks instead of a record per line
    (the pipeline takes those much faster); JSON inputs still come as records.
    """
    position = position or Position()
    for path in paths:
        if path == "-":
            yield from read_stream(sys.stdin.buffer, "<stdin>", position, batches)
            continue
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below; a generator cannot use `with` around yields cleanly
        except OSError as exc:
            yield InputError(path, f"cannot open: {exc.strerror or exc}")
            continue
        try:
            yield from read_stream(fh, path, position, batches)
        except OSError as exc:
            yield InputError(path, f"read failed: {exc.strerror or exc}")
        finally:
            fh.close()


def read_stream(
    fh: BinaryIO, name: str, position: Position, batches: bool = False
) -> Iterator[RawRecord | LineBatch | InputError]:
    """Records (or, for plain text with ``batches``, line batches) from one binary stream, format
    auto-detected."""
    first = b""
    lead: list[bytes] = []
    for raw in fh:
        lead.append(raw)
        if raw.strip():
            first = raw.lstrip()
            break
    if first.startswith(b"{"):
        rest = fh.read()
        whole = b"".join(lead) + rest
        try:
            doc = orjson.loads(whole)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("logs"), list):
            yield from _render_dump(doc["logs"], name, position)
            return
        yield from _ndjson(whole.splitlines(keepends=True), name, position)
        return
    if batches:
        yield from _plain_batches(b"".join(lead), fh, name, position)
    else:
        yield from _plain(_chain(lead, fh), name, position)


def _plain_batches(head: bytes, fh: BinaryIO, name: str, position: Position) -> Iterator[LineBatch]:
    """Plain text in blocks cut after a newline; positions count lines as ``_plain`` does.

    A batch holds everything up to the last newline read so far (as ``pending + block`` cut there).
    Each block is copied once, into its batch; a block read whole up to a newline is not copied.
    """
    pending = head
    last: LineBatch | None = None  # its lines are counted only when the next position is needed
    try:
        while True:
            block = fh.read(BATCH_BYTES)
            if not block:
                if pending:
                    position.value = _settled(last, position.value)
                    last = LineBatch(pending, [name], first_position=position.value + 1)
                    yield last
                return
            cut = block.rfind(b"\n")
            if cut < 0:
                cut = pending.rfind(b"\n")  # only the lead lines before the first block hold one
                if cut < 0:  # one line longer than a block: keep reading
                    pending += block
                    continue
                data, pending = pending[: cut + 1], pending[cut + 1 :] + block
            elif cut == len(block) - 1:
                data = pending + block if pending else block
                pending = b""
            else:
                data = b"".join((pending, memoryview(block)[: cut + 1]))
                pending = block[cut + 1 :]
            position.value = _settled(last, position.value)
            last = LineBatch(data, [name], first_position=position.value + 1)
            yield last
    finally:
        position.value = _settled(last, position.value)


def _settled(batch: LineBatch | None, value: int) -> int:
    """The position after ``batch`` (which starts at ``value + 1``): its line count, as the pipeline
    recorded it when it indexed the batch, else counted here (a consumer that has not processed it)."""
    if batch is None:
        return value
    lines = batch.lines
    if lines is None:
        data = batch.data
        lines = data.count(b"\n") + (not data.endswith(b"\n"))
    return value + lines


def _chain(lead: list[bytes], fh: BinaryIO) -> Iterator[bytes]:
    yield from lead
    yield from fh


def _plain(lines: Iterable[bytes], name: str, position: Position) -> Iterator[RawRecord]:
    n = position.value
    for raw in lines:
        n += 1
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        yield RawRecord(text, name, None, n)
    position.value = n


def _render_dump(logs: list[object], name: str, position: Position) -> Iterator[RawRecord | InputError]:
    for index, obj in enumerate(logs):
        position.value += 1
        record = log_object_record(obj, name, position.value)
        if isinstance(record, str):
            yield InputError(f"{name}: logs[{index}]", record)
        else:
            yield from split_lines(record)


def _ndjson(lines: Iterable[bytes], name: str, position: Position) -> Iterator[RawRecord | InputError]:
    base = position.value
    for lineno, raw in enumerate(lines, 1):
        # Blank lines count too, so a record's position is its line number, as in plain files.
        position.value = base + lineno
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield InputError(f"{name}:{lineno}", f"malformed JSON line ({exc.msg}); skipped")
            continue
        record = log_object_record(obj, name, position.value)
        if isinstance(record, str):
            yield InputError(f"{name}:{lineno}", record)
        else:
            yield from split_lines(record)


def log_object_record(obj: object, source: str, position: int) -> RawRecord | str:
    """A Render API log object (``{"id","timestamp","message","labels"}``) → record, or a problem."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    message = obj.get("message")
    if not isinstance(message, str):
        return "log object has no string 'message'"
    ts_raw = obj.get("timestamp")
    ts = parse_iso_time(ts_raw) if isinstance(ts_raw, str) else None
    labels = obj.get("labels")
    if isinstance(labels, list):
        lab = {d.get("name"): d.get("value") for d in labels if isinstance(d, dict)}
        inst = lab.get("instance") or lab.get("resource")
        if isinstance(inst, str) and inst:
            source = inst
    log_id = obj.get("id")
    return RawRecord(message, source, ts, position, log_id if isinstance(log_id, str) else None)


def split_lines(record: RawRecord) -> Iterator[RawRecord]:
    """A multi-line message is several log lines from one source, in order, sharing its position."""
    text = record.text
    if "\n" not in text:
        yield record
        return
    for part in text.rstrip("\n").split("\n"):
        yield RawRecord(part.rstrip("\r"), record.source, record.ts, record.position, record.log_id)
