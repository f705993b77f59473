"""Plain-text replay input in batches: the same blocks and positions as the line-by-line reader."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

import pytest

from stream_triage.records import LineBatch, RawRecord
from stream_triage.sources import files
from stream_triage.sources.files import Position, read_stream


def _frozen_plain_batches(head: bytes, fh: io.BytesIO, block_bytes: int) -> Iterator[tuple[bytes, int]]:
    """The reader as it was before it stopped counting lines twice: (data, first position) per batch."""
    position = 0
    pending = head
    while True:
        block = fh.read(block_bytes)
        if not block:
            if pending:
                yield pending, position + 1
            return
        data = pending + block if pending else block
        cut = data.rfind(b"\n")
        if cut < 0:
            pending = data
            continue
        pending = data[cut + 1 :]
        data = data[: cut + 1] if pending else data
        yield data, position + 1
        position += data.count(b"\n") + (not data.endswith(b"\n"))


def _random_text(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randint(0, 60)):
        kind = rng.random()
        if kind < 0.1:
            lines.append("")
        elif kind < 0.2:
            lines.append("x" * rng.randint(20, 200))  # longer than a block
        else:
            lines.append(" ".join(rng.choice(["ab", "c", "[ERROR]", "é", "\r"]) for _ in range(rng.randint(1, 8))))
    text = "\n".join(lines)
    if lines and rng.random() < 0.5:
        text += "\n"
    if rng.random() < 0.3:
        text = "\n" * rng.randint(1, 3) + text  # blank lead lines before the first real one
    return text.encode("utf-8")


@pytest.mark.parametrize("processed", [False, True])
def test_plain_batches_match_the_old_reader(monkeypatch: pytest.MonkeyPatch, processed: bool) -> None:
    """Same batch data and positions, whether or not the consumer records the line count."""
    rng = random.Random(20251103)
    for _ in range(400):
        data = _random_text(rng)
        if data.lstrip().startswith(b"{"):
            continue
        block_bytes = rng.choice([1, 7, 16, 64, 1000])
        monkeypatch.setattr(files, "BATCH_BYTES", block_bytes)
        # read_stream reads the lead lines first; the old reader got them as its head.
        lead = io.BytesIO(data)
        head = []
        for raw in lead:
            head.append(raw)
            if raw.strip():
                break
        expected = list(_frozen_plain_batches(b"".join(head), lead, block_bytes))
        position = Position(5)
        got = []
        for batch in read_stream(io.BytesIO(data), "f", position, batches=True):
            assert isinstance(batch, LineBatch)
            got.append((batch.data, batch.first_position - 5))
            if processed:
                batch.lines = len(batch.records())
        assert got == expected
        plain = list(read_stream(io.BytesIO(data), "f", Position(5)))
        assert position.value == (plain[-1].position if plain else 5)
        batches = read_stream(io.BytesIO(data), "f", Position(5), batches=True)
        records = [r for batch in batches if isinstance(batch, LineBatch) for r in batch.records()]
        lines = [(r.text, r.position) for r in plain if isinstance(r, RawRecord)]
        assert [(r.text, r.position) for r in records] == lines


def test_position_settles_when_the_reader_is_closed_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "BATCH_BYTES", 8)
    position = Position()
    reader = read_stream(io.BytesIO(b"a\nb\nc\nd\ne\nf\ng\n"), "f", position, batches=True)
    first = next(reader)
    assert isinstance(first, LineBatch)
    reader.close()
    assert position.value == first.data.count(b"\n")
