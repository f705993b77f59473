"""Syslog on the wire: stream framing (RFC 6587), message parsing (RFC 5424, logplex, RFC 3164), tokens.

Pure and synchronous: bytes in, frames and records out. The TCP/TLS listener and the HTTPS drain own
the sockets and call into this module, so everything here is testable without I/O.

- ``SyslogFramer`` splits a TCP byte stream into frames. Each frame's first byte picks its framing:
  a digit means octet counting (``LEN SP MSG``), anything else a frame ending at LF (or NUL).
  ``feed_into`` lets a fast path (``sources.batching``) take the clean octet-counted frames directly.
- ``parse_syslog`` turns one frame into a ``SyslogMessage``.
- ``parse_logplex`` splits a Heroku-style ``application/logplex-1`` body into frames.
- ``find_token`` / ``check_token`` / ``tokens_equal`` find and verify a sender's token.
"""

from __future__ import annotations

import calendar
import hmac
import re
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

__all__ = [
    "FastScan",
    "FramingError",
    "LogplexFramingError",
    "SyslogFramer",
    "SyslogMessage",
    "SyslogParseError",
    "check_token",
    "find_token",
    "next_logplex_frame",
    "parse_logplex",
    "parse_rfc3339",
    "parse_syslog",
    "token_candidates",
    "tokens_equal",
]

DEFAULT_MAX_FRAME_BYTES = 256 * 1024

# A length prefix longer than this many digits (≥ 1 GB) is garbage, not a frame we could skip exactly.
_MAX_LEN_DIGITS = 9
_MAX_KEPT_ERRORS = 1000


# ``scan(data, pos, max_frame_bytes) -> pos``: takes the clean octet-counted frames at ``pos`` (see
# ``SyslogFramer.feed_into`` and ``sources.batching``).
FastScan = Callable[[bytes, int, int], int]


class SyslogParseError(ValueError):
    """A frame is not a syslog message; the message is a short reason the listener can count."""


@dataclass(slots=True, frozen=True)
class FramingError:
    """One framing problem. ``kind`` is a bounded label: oversized, bad_length or truncated."""

    kind: str
    detail: str


class LogplexFramingError(SyslogParseError):
    """A logplex body is cut short or garbled; ``frames`` holds the complete frames before the problem."""

    def __init__(self, reason: str, frames: list[bytes]) -> None:
        super().__init__(reason)
        self.frames = frames


class SyslogFramer:
    """Incremental RFC 6587 framer for one connection: octet counting and LF/NUL framing, per frame.

    ``feed`` returns the frames completed by a chunk; problems are kept in ``errors`` (drain them with
    ``pop_errors``) and the framer resynchronises: an oversized octet-counted frame is skipped by its
    declared length, an oversized LF frame up to its terminator, a garbled length prefix up to the next
    LF. ``flush`` at connection close returns an unterminated trailing LF frame.
    """

    __slots__ = ("_pending", "_skip", "_skip_line", "_want", "error_count", "errors", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be at least 1")
        self.max_frame_bytes = max_frame_bytes
        self.errors: list[FramingError] = []
        self.error_count = 0
        self._pending = bytearray()  # the start of an incomplete frame
        self._want = 0  # total bytes (header + body) the pending octet-counted frame needs; 0 if unknown
        self._skip = 0  # bytes still to discard of an oversized octet-counted frame
        self._skip_line = False  # discarding up to the next LF/NUL

    def pop_errors(self) -> list[FramingError]:
        """Return and forget the errors recorded since the last call."""
        errors, self.errors = self.errors, []
        return errors

    def feed(self, data: bytes) -> list[bytes]:
        """Consume a chunk of the stream; return the frames it completes (without terminators)."""
        out: list[bytes] = []
        data = self._take(data)
        if data and (data.find(b"\0") >= 0 or not self._split_lines(data, out)):
            self._scan(data, out)
        return out

    def feed_into(self, data: bytes, scan: FastScan | None, on_frame: Callable[[bytes], None]) -> None:
        """Consume a chunk like ``feed``, letting ``scan`` take the octet-counted frames it can.

        ``scan(data, pos, max_frame_bytes)`` consumes the complete octet-counted frames at ``pos`` that it
        understands and returns where it stopped; every other frame goes to ``on_frame``. Frames are
        handled in stream order and errors recorded exactly as ``feed`` would.
        """
        data = self._take(data)
        if not data:
            return
        out: list[bytes] = []
        if scan is None:
            if data.find(b"\0") >= 0 or not self._split_lines(data, out):
                self._scan(data, out)
            for frame in out:
                on_frame(frame)
            return
        # A chunk starting with a digit is never all LF frames, so ``feed`` would go to ``_scan`` too.
        if not 48 <= data[0] <= 57 and data.find(b"\0") < 0 and self._split_lines(data, out):
            for frame in out:
                on_frame(frame)
            return
        n = len(data)
        limit = self.max_frame_bytes
        pos = 0
        nul = -2
        while pos < n:
            pos = scan(data, pos, limit)
            if pos >= n:
                break
            # The frame at pos is one the fast path left: the exact path takes it and what follows
            # up to the next frame that starts with a digit.
            pos, nul = self._scan(data, out, pos, nul, stop_at_digit=True)
            for frame in out:
                on_frame(frame)
            out.clear()

    def _take(self, data: bytes) -> bytes:
        # Settles the state carried over from earlier chunks; returns the bytes left to scan (b"" if none).
        if not data:
            return b""
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return b""
            data = data[self._skip :]
            self._skip = 0
        if self._skip_line:
            end = _terminator(data, 0)
            if end < 0:
                return b""
            data = data[end + 1 :]
            self._skip_line = False
            if not data:
                return b""
        pending = self._pending
        if pending:
            if self._want:
                if len(pending) + len(data) < self._want:
                    pending += data
                    return b""
            elif (pending[0] > 57 or pending[0] < 48) and data.find(b"\n") < 0 and data.find(b"\0") < 0:
                # An LF frame in progress that this chunk does not terminate.
                pending += data
                if len(pending) > self.max_frame_bytes:
                    self._error("oversized", f"LF-terminated frame longer than {self.max_frame_bytes} bytes")
                    pending.clear()
                    self._skip_line = True
                return b""
            data = bytes(pending) + data
            pending.clear()
            self._want = 0
        return data

    def flush(self) -> list[bytes]:
        """End of stream: return a trailing unterminated LF frame; an incomplete octet frame is an error."""
        pending = self._pending
        out: list[bytes] = []
        if pending:
            if 48 <= pending[0] <= 57:
                detail = f"connection closed inside an octet-counted frame ({len(pending)} bytes)"
                self._error("truncated", detail)
            else:
                frame = bytes(pending)
                if frame.endswith(b"\r"):
                    frame = frame[:-1]
                if frame:
                    out.append(frame)
        pending.clear()
        self._want = 0
        self._skip = 0
        self._skip_line = False
        return out

    def _error(self, kind: str, detail: str) -> None:
        self.error_count += 1
        if len(self.errors) < _MAX_KEPT_ERRORS:
            self.errors.append(FramingError(kind, detail))

    def _split_lines(self, data: bytes, out: list[bytes]) -> bool:
        # Fast path for a chunk framed by LF alone: let C split it in one go. Returns False, having
        # done nothing, when some frame starts with a digit (octet counting mixed in).
        if b"\r\n" in data:
            data = data.replace(b"\r\n", b"\n")
        lines = data.split(b"\n")
        firsts = b"".join([line[:1] for line in lines])
        if len(firsts.translate(None, b"0123456789")) != len(firsts):
            return False
        tail = lines.pop()
        if lines:
            if b"" in lines:
                lines = [line for line in lines if line]
            if lines and max(map(len, lines)) > self.max_frame_bytes:
                limit = self.max_frame_bytes
                for line in lines:
                    if len(line) > limit:
                        self._error("oversized", f"LF-terminated frame of {len(line)} bytes (limit {limit})")
                    else:
                        out.append(line)
            else:
                out.extend(lines)
        if tail:
            if len(tail) > self.max_frame_bytes:
                self._error("oversized", f"LF-terminated frame longer than {self.max_frame_bytes} bytes")
                self._skip_line = True
            else:
                self._pending += tail
        return True

    def _scan(
        self, data: bytes, out: list[bytes], pos: int = 0, nul: int = -2, stop_at_digit: bool = False
    ) -> tuple[int, int]:
        # General path: frame by frame, deciding the framing from each frame's first byte. With
        # ``stop_at_digit`` it returns at the next frame after ``pos`` that starts with a digit (for
        # ``feed_into``'s fast path). Returns where it stopped and the NUL search state (-2: not
        # searched yet; else the first NUL at or after some earlier position, or -1 for none).
        n = len(data)
        find = data.find
        limit = self.max_frame_bytes
        start = pos
        while pos < n:
            c = data[pos]
            if 48 <= c <= 57:
                if stop_at_digit and pos != start:
                    return pos, nul
                sp = find(b" ", pos, pos + _MAX_LEN_DIGITS + 1)
                if sp < 0:
                    head = data[pos : pos + _MAX_LEN_DIGITS + 1]
                    if head.isdigit() and len(head) <= _MAX_LEN_DIGITS:
                        self._pending += data[pos:]  # the length prefix continues in the next chunk
                        return n, nul
                    kind_detail = "absurd" if head.isdigit() else "non-numeric"
                    self._error("bad_length", f"{kind_detail} octet-count prefix {head[:12]!r}")
                    pos = self._resync(data, pos)
                    continue
                head = data[pos:sp]
                if not head.isdigit():
                    self._error("bad_length", f"non-numeric octet-count prefix {head[:12]!r}")
                    pos = self._resync(data, pos)
                    continue
                length = int(head)
                end = sp + 1 + length
                if length > limit:
                    self._error("oversized", f"octet-counted frame of {length} bytes (limit {limit})")
                    if end > n:
                        self._skip = end - n
                        return n, nul
                    pos = end
                    continue
                if end > n:
                    self._pending += data[pos:]
                    self._want = end - pos
                    return n, nul
                if length:
                    out.append(data[sp + 1 : end])
                pos = end
            elif c == 10 or c == 0 or c == 13:
                pos += 1  # empty frames and stray separators between frames
            else:
                lf = find(b"\n", pos)
                if nul == -2 or 0 <= nul < pos:
                    nul = find(b"\0", pos)
                end = lf if nul < 0 or (0 <= lf < nul) else nul
                if end < 0:
                    if n - pos > limit:
                        self._error("oversized", f"LF-terminated frame longer than {limit} bytes")
                        self._skip_line = True
                    else:
                        self._pending += data[pos:]
                    return n, nul
                if end - pos > limit:
                    self._error("oversized", f"LF-terminated frame of {end - pos} bytes (limit {limit})")
                elif data[end - 1] == 13:
                    if end - 1 > pos:
                        out.append(data[pos : end - 1])
                else:
                    out.append(data[pos:end])
                pos = end + 1
        return pos, nul

    def _resync(self, data: bytes, pos: int) -> int:
        end = _terminator(data, pos)
        if end < 0:
            self._skip_line = True
            return len(data)
        return end + 1


def _terminator(data: bytes, pos: int) -> int:
    lf = data.find(b"\n", pos)
    nul = data.find(b"\0", pos, lf if lf >= 0 else len(data))
    return nul if nul >= 0 else lf


def parse_logplex(body: bytes) -> list[bytes]:
    """Split an ``application/logplex-1`` body into its octet-counted frames.

    Raises ``LogplexFramingError`` (with the complete frames before the problem in ``.frames``) when a
    frame is truncated or a length prefix is missing.
    """
    frames: list[bytes] = []
    pos = 0
    while True:
        try:
            frame, pos = next_logplex_frame(body, pos)
        except LogplexFramingError as exc:
            raise LogplexFramingError(str(exc), frames) from None
        if frame is None:
            return frames
        frames.append(frame)


def next_logplex_frame(body: bytes, pos: int) -> tuple[bytes | None, int]:
    """The frame of a logplex body at ``pos`` (after separating whitespace) and the position after it.

    ``(None, len(body))`` at the end of the body. Raises ``LogplexFramingError`` (with no frames) when
    the frame is truncated or its length prefix is missing.
    """
    n = len(body)
    find = body.find
    while pos < n:
        c = body[pos]
        if c in (10, 13, 32, 9):
            pos += 1  # some senders separate frames with whitespace
            continue
        sp = find(b" ", pos, pos + _MAX_LEN_DIGITS + 1)
        head = body[pos:sp] if sp >= 0 else body[pos : pos + _MAX_LEN_DIGITS + 1]
        if sp < 0 or not head.isdigit():
            raise LogplexFramingError(f"expected a frame length at byte {pos}, got {head[:12]!r}", [])
        end = sp + 1 + int(head)
        if end > n:
            raise LogplexFramingError(
                f"frame at byte {pos} declares {int(head)} bytes but only {n - sp - 1} remain", []
            )
        return body[sp + 1 : end], end
    return None, n


@dataclass(slots=True)
class SyslogMessage:
    """One parsed syslog message. ``timestamp`` is epoch seconds (None when nil or absent)."""

    pri: int
    facility: int
    severity: int
    timestamp: float | None
    hostname: str | None
    app_name: str | None
    procid: str | None
    msgid: str | None
    structured_data: dict[str, dict[str, str]] = field(default_factory=dict)
    message: str = ""
    format: str = "5424"


# RFC 5424 reserves SD-IDs without "@" for IANA registration; only these exist. Anything else in
# brackets right after MSGID is the start of a message whose SD field was omitted (logplex-style).
_IANA_SD_IDS = frozenset({"timeQuality", "origin", "meta"})
_SD_UNESCAPE = re.compile(r"\\([\\\"\]])")


def parse_syslog(frame: bytes, *, sd_omitted: bool = False, now: float | None = None) -> SyslogMessage:
    """Parse one syslog frame (RFC 5424, its logplex variant, or RFC 3164).

    ``sd_omitted=True`` is for logplex bodies, whose STRUCTURED-DATA field is left out entirely; by
    default a message is taken to start right after MSGID when what follows is neither ``-`` nor a
    well-formed SD element. ``now`` (epoch seconds) is used to infer the year of RFC 3164 timestamps.
    Raises ``SyslogParseError`` with a short reason when the frame is not syslog.
    """
    s = frame.decode("utf-8", "replace")
    parts = s.split(" ", 6)
    head = parts[0]
    # Fast path: "<PRI>1" is RFC 5424 (VERSION 1 is the only one defined).
    if head[-2:] == ">1" and head[:1] == "<" and len(parts) >= 6:
        pri = _PRI.get(head[1:-2])
        if pri is None:
            raise SyslogParseError("bad PRI")
        ts_text = parts[1]
        if ts_text == "-":
            ts = None
        else:
            try:
                ts = parse_rfc3339(ts_text)
            except (ValueError, IndexError):
                raise SyslogParseError("bad RFC 5424 TIMESTAMP") from None
        tail = parts[6] if len(parts) == 7 else ""
        sd: dict[str, dict[str, str]] = {}
        if tail and not sd_omitted:
            first = tail[0]
            if first == "-" and tail[1:2] in ("", " "):
                tail = tail[2:]
            elif first == "[":
                parsed = _parse_sd(tail)
                if parsed is not None:
                    sd, end = parsed
                    tail = tail[end + 1 :]
        if tail[:1] == "\ufeff":
            tail = tail[1:]
        if tail[-1:] == "\n":
            tail = tail.rstrip("\r\n")
        host, app, procid, msgid = parts[2], parts[3], parts[4], parts[5]
        return SyslogMessage(
            pri,
            pri >> 3,
            pri & 7,
            ts,
            None if host == "-" else host,
            None if app == "-" else app,
            None if procid == "-" else procid,
            None if msgid == "-" else msgid,
            sd,
            tail,
            "5424",
        )
    if not s:
        raise SyslogParseError("empty frame")
    if s[0] != "<":
        raise SyslogParseError("missing <PRI>")
    gt = s.find(">", 1, 5)
    if gt < 0:
        raise SyslogParseError("unterminated <PRI>")
    pri = _PRI.get(s[1:gt])
    if pri is None:
        raise SyslogParseError("bad PRI")
    rest = s[gt + 1 :]
    if rest.startswith("1 "):
        raise SyslogParseError("RFC 5424 header has too few fields")
    return _parse_3164(pri, rest, now)


_PRI = {str(i): i for i in range(192)}


def _parse_sd(s: str) -> tuple[dict[str, dict[str, str]], int] | None:
    """Parse SD elements at the start of ``s``; return them and the index after the last ``]``.

    None when the text is not well-formed structured data (then it is message text).
    """
    sd: dict[str, dict[str, str]] = {}
    n = len(s)
    pos = 0
    while pos < n and s[pos] == "[":
        i = pos + 1
        j = s.find("]", i)
        if j < 0:
            return None
        space = s.find(" ", i, j)
        if space >= 0:
            j = space
        sd_id = s[i:j]
        if not sd_id or "=" in sd_id or '"' in sd_id:
            return None
        if "@" not in sd_id and sd_id not in _IANA_SD_IDS:
            return None
        params = sd.setdefault(sd_id, {})
        pos = j
        while pos < n and s[pos] == " ":
            eq = s.find("=", pos + 1)
            if eq < 0 or eq + 1 >= n or s[eq + 1] != '"':
                return None
            name = s[pos + 1 : eq]
            if not name or " " in name or "]" in name:
                return None
            k = eq + 2
            while True:
                q = s.find('"', k)
                if q < 0:
                    return None
                backslashes = 0
                b = q - 1
                while b >= k and s[b] == "\\":
                    backslashes += 1
                    b -= 1
                if backslashes % 2 == 0:
                    break
                k = q + 1
            value = s[eq + 2 : q]
            if "\\" in value:
                value = _SD_UNESCAPE.sub(r"\1", value)
            params[name] = value
            pos = q + 1
        if pos >= n or s[pos] != "]":
            return None
        pos += 1
    if pos < n and s[pos] != " ":
        return None
    return sd, pos


_MONTHS = {
    m: i for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1)
}
_BSD_TS = re.compile(r"([A-Z][a-z]{2}) ([ \d]?\d) (\d\d):(\d\d):(\d\d)(?:\.(\d+))? ")
_BSD_TAG = re.compile(r"([^\s:\[\]]{1,64})(?:\[([^\]\s]*)\])?: ?")


def _parse_3164(pri: int, rest: str, now: float | None) -> SyslogMessage:
    ts: float | None = None
    host: str | None = None
    app: str | None = None
    procid: str | None = None
    m = _BSD_TS.match(rest)
    if m:
        month = _MONTHS.get(m.group(1))
        if month is None:
            raise SyslogParseError("bad RFC 3164 month")
        ts = _bsd_epoch(month, int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)), now)
        if m.group(6):
            ts += float("0." + m.group(6))
        rest = rest[m.end() :]
        # With a timestamp comes HOSTNAME, unless the next word is already the TAG ("su:", "cron[1]:").
        tag = _BSD_TAG.match(rest)
        if not tag:
            sp = rest.find(" ")
            if sp > 0:
                host, rest = rest[:sp], rest[sp + 1 :]
            tag = _BSD_TAG.match(rest)
    elif rest[:1].isdigit() and rest[:4].isdigit() and rest[4:5] == "-":
        sp = rest.find(" ")
        try:
            ts = parse_rfc3339(rest[:sp] if sp > 0 else rest)
        except ValueError:
            raise SyslogParseError("bad timestamp after PRI") from None
        rest = rest[sp + 1 :] if sp > 0 else ""
        sp = rest.find(" ")
        if sp > 0:
            host, rest = rest[:sp], rest[sp + 1 :]
        tag = _BSD_TAG.match(rest)
    else:
        tag = None
    if tag:
        app, procid = tag.group(1), tag.group(2)
        rest = rest[tag.end() :]
    message = _clean_message(rest)
    return SyslogMessage(pri, pri >> 3, pri & 7, ts, host, app, procid or None, None, {}, message, "3164")


def _bsd_epoch(month: int, day: int, hh: int, mm: int, ss: int, now: float | None) -> float:
    # RFC 3164 has no year and no zone: take UTC and the year that puts the time nearest to now (a
    # December line read in January belongs to last year).
    if not (1 <= day <= 31 and hh < 24 and mm < 60 and ss < 61):
        raise SyslogParseError("bad RFC 3164 timestamp")
    now = time.time() if now is None else now
    year = time.gmtime(now).tm_year
    try:
        ts = calendar.timegm((year, month, day, hh, mm, ss, 0, 0, 0))
        if ts > now + 7 * 86400:
            ts = calendar.timegm((year - 1, month, day, hh, mm, ss, 0, 0, 0))
    except (ValueError, OverflowError):
        raise SyslogParseError("bad RFC 3164 timestamp") from None
    return float(ts)


def _clean_message(msg: str) -> str:
    if msg.startswith("\ufeff"):
        msg = msg[1:]
    if msg.endswith("\n"):
        msg = msg.rstrip("\r\n")
    return msg


def _second_epoch(prefix: str) -> int:
    if len(prefix) != 19 or prefix[4] != "-" or prefix[7] != "-" or prefix[13] != ":" or prefix[16] != ":":
        raise ValueError(f"not an RFC 3339 date-time: {prefix!r}")
    if prefix[10] not in "Tt ":
        raise ValueError(f"not an RFC 3339 date-time: {prefix!r}")
    y, mo, d = int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10])
    h, mi, sec = int(prefix[11:13]), int(prefix[14:16]), int(prefix[17:19])
    if not (1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y, mo)[1] and h < 24 and mi < 60 and sec < 61):
        raise ValueError(f"date-time out of range: {prefix!r}")
    return calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0))


def _zone_offset(zone: str) -> int:
    if len(zone) != 6 or zone[0] not in "+-" or zone[3] != ":" or not (zone[1:3] + zone[4:]).isdigit():
        raise ValueError(f"missing or bad UTC offset {zone!r}")
    offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
    return -offset if zone[0] == "-" else offset


# Lines arrive in bursts sharing the same second, so the calendar work is cached per second (plain
# dicts: an lru_cache call costs more than the lookup it saves). Both are cleared when they fill up.
_SECONDS: dict[str, int] = {}
_ZONES: dict[str, int] = {}
_CACHE_MAX = 4096


def parse_rfc3339(text: str) -> float:
    """Epoch seconds from an RFC 3339 timestamp (``2025-11-03T08:15:22.429113507Z``, offsets allowed).

    Fractions of any length are kept to float precision. Raises ``ValueError`` when malformed.
    """
    key = text[:19]
    base = _SECONDS.get(key)
    if base is None:
        base = _second_epoch(key)
        if len(_SECONDS) >= _CACHE_MAX:
            _SECONDS.clear()
        _SECONDS[key] = base
    if text[-1:] in ("Z", "z"):
        offset = 0
        frac = text[19:-1]
    else:
        zone = text[-6:]
        cached = _ZONES.get(zone)
        if cached is None:
            cached = _zone_offset(zone)
            if len(_ZONES) >= _CACHE_MAX:
                _ZONES.clear()
            _ZONES[zone] = cached
        offset = cached
        frac = text[19:-6]
    if frac:
        digits = frac[1:]
        if frac[0] not in ".," or not digits.isdigit() or not digits.isascii():
            raise ValueError(f"bad fraction of a second in {text!r}")
        return base - offset + float("0." + digits)
    return float(base - offset)


# --- tokens -----------------------------------------------------------------------------------------

DEFAULT_TOKEN_PARAMS = ("token", "apikey", "api_key", "apiKey", "key")
_SD_ID_TOKEN = re.compile(r"([A-Za-z0-9._~+/=-]{8,})@\d+")
_BARE_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,}")


def _sd_param_tokens(msg: SyslogMessage, sd_ids: Collection[str] | None, param_names: Collection[str]) -> Iterator[str]:
    """Non-empty values of the token-named SD params (only in the SD elements ``sd_ids``, if given)."""
    for sd_id, params in msg.structured_data.items():
        if sd_ids is not None and sd_id not in sd_ids:
            continue
        for name in param_names:
            value = params.get(name)
            if value:
                yield value


def token_candidates(
    msg: SyslogMessage,
    *,
    sd_ids: Collection[str] | None = None,
    param_names: Collection[str] = DEFAULT_TOKEN_PARAMS,
    bare_prefix: bool = True,
) -> list[tuple[str, str]]:
    """Every place a token could be, most specific first, as (token, message without the token).

    In order: an SD param named in ``param_names`` (only in the SD elements ``sd_ids``, if given); an
    SD-ID whose name part is the token (``[TOKEN@41058]``); a ``token=TOKEN `` message prefix; the
    first word of the message (``TOKEN message``) when ``bare_prefix``.
    """
    text = msg.message
    out = [(value, text) for value in _sd_param_tokens(msg, sd_ids, param_names)]
    for sd_id in msg.structured_data:
        at = sd_id.find("@")
        if at > 0:
            out.append((sd_id[:at], text))
    word, sep, remainder = text.partition(" ")
    if word.startswith("token=") and len(word) > 6:
        out.append((word[6:], remainder))
    elif bare_prefix and word and sep:
        out.append((word, remainder))
    return out


def find_token(
    msg: SyslogMessage,
    *,
    sd_ids: Collection[str] | None = None,
    param_names: Collection[str] = DEFAULT_TOKEN_PARAMS,
) -> tuple[str | None, str]:
    """Best guess at the sender's token without knowing it: (token or None, message without its prefix).

    Structured data wins (a named param, then a token-like ``NAME@PEN`` SD-ID); then a ``token=X``
    prefix; then a bare first word only if it looks like a generated token (16+ token characters), so
    an ordinary first word is never mistaken for one. To verify against a known token use
    ``check_token``, which tries every candidate.
    """
    text = msg.message
    for value in _sd_param_tokens(msg, sd_ids, param_names):
        return value, text
    for sd_id in msg.structured_data:
        m = _SD_ID_TOKEN.fullmatch(sd_id)
        if m:
            return m.group(1), text
    word, sep, remainder = text.partition(" ")
    if word.startswith("token=") and len(word) > 6:
        return word[6:], remainder
    if sep and _BARE_TOKEN.fullmatch(word):
        return word, remainder
    return None, text


def check_token(
    msg: SyslogMessage,
    expected: str,
    *,
    sd_ids: Collection[str] | None = None,
    param_names: Collection[str] = DEFAULT_TOKEN_PARAMS,
) -> str | None:
    """The message (token prefix removed) if any token candidate equals ``expected``, else None.

    Every candidate is compared in constant time, so timing reveals nothing about which one was close.
    """
    found: str | None = None
    for token, text in token_candidates(msg, sd_ids=sd_ids, param_names=param_names):
        if tokens_equal(token, expected) and found is None:
            found = text
    return found


def tokens_equal(a: str | bytes | None, b: str | bytes | None) -> bool:
    """Constant-time token comparison; None or empty never matches."""
    if not a or not b:
        return False
    a_bytes = a.encode("utf-8") if isinstance(a, str) else a
    b_bytes = b.encode("utf-8") if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)
