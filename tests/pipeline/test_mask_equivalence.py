"""``mask_message`` skips work (screens, a plain number mask, split/join for spaces): the output must be
byte-identical to the straightforward implementation, frozen here, on realistic and hostile messages."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from stream_triage.pipeline import fingerprint as fp_module
from stream_triage.pipeline.fingerprint import mask_message

# ---------------------------------------------------------------- the implementation as it was (frozen)
_OLD_NEEDS = [":", ":", "-", "://", "@", "-", None, "-", None, None, None, None, "lient"]
_OLD_SPACE = re.compile(r"\s+")


def _old_mask_message(message: str, names: Iterable[str] = ()) -> str:
    text = message
    for name in names:
        if name and len(name) > 2:
            text = text.replace(name, "<client>")
            if "-" in name:
                text = text.replace(name.replace("-", " "), "<client>")
    for (pattern, placeholder), needs in zip(fp_module._MASKS, _OLD_NEEDS, strict=True):
        if needs is None or needs in text:
            text = pattern.sub(placeholder, text)
    if "?" in text:
        text = fp_module._QUERY.sub(fp_module._query, text)
    if "'" in text or '"' in text or "`" in text:
        text = fp_module._QUOTED.sub(fp_module._quoted, text)
    text = fp_module._NUMBER_OR_STATUS.sub(fp_module._number_or_status, text)
    return _OLD_SPACE.sub(" ", text).strip()


# ---------------------------------------------------------------- messages
_TEMPLATES = [
    "Failed to update run record {rec}: Request failed with status code {status}",
    "Failed to parse AI response for lead {rec}: Unexpected token < in JSON at position {n}",
    "timeout of {n}ms exceeded calling Vertex AI for lead {rec}",
    "Gemini API rate limited ({status} Too Many Requests), retrying in {n} s",
    'Unknown field name: "{word}" while updating {rec}',
    "GET {url} responded with {status} after {float} ms",
    "HTTP/1.1 {status} from {url} at {ts}",
    "job {uuid} returned {status}; retry at {time} for {email}",
    "connection reset by peer 0x{hex} ({HEX}) code={status} stream {n}",
    "deploy {srv} failed: token {tok} rejected; Client {Name} gave up",
    "client: '{Name}' sent `{word}` and '{n} items' to {url}?a={n}&b={word}",
    "{run} finished with CODE {status} at {ts} (took {float}s)",
    "status:{status} status code {status} STATUS  {status}",
    "{word}{n}{word} {hexlong} {toklong} {mixed}",
]
_PIECES = {
    "rec": lambda r: "rec" + "".join(r.choice("abcdefXYZ0123456789") for _ in range(r.choice([13, 14, 15]))),
    "status": lambda r: str(r.choice([200, 404, 429, 503, 600, 99, 1000])),
    "n": lambda r: str(r.randint(0, 10**r.randint(1, 7))),
    "float": lambda r: f"{r.random() * 1000:.{r.randint(0, 4)}f}".replace(".", r.choice(".,")),
    "word": lambda r: r.choice(["Stream", "lodash.merge", "@google-cloud/vertexai", "./db", "a b", "", "x1", "ſtatus"]),
    "url": lambda r: r.choice(["https://api.example.com/v1/x?id=5", "redis://:pw@host:6379/0", "/api/leads?x=1&y=2;z"]),
    "ts": lambda r: r.choice(["2025-11-03T08:15:22.429Z", "2025-11-03 08:15:22,5+01:00", "2025-11-03T08:15:22"]),
    "time": lambda r: r.choice(["08:15:22", "8:15:22", "08:15:22.123", "٠٨:١٥:٢٢"]),
    "uuid": lambda r: "-".join("".join(r.choice("0123456789abcdefABCDEF") for _ in range(k)) for k in (8, 4, 4, 4, 12)),
    "email": lambda r: r.choice(["ann.lee+x@example.co.uk", "a@b", "x@y.z"]),
    "hex": lambda r: "".join(r.choice("0123456789abcdef") for _ in range(r.randint(1, 16))),
    "HEX": lambda r: "0X" + "".join(r.choice("0123456789ABCDEF") for _ in range(r.randint(1, 8))),
    "srv": lambda r: r.choice(["srv-", "usr-"]) + "".join(r.choice("abc0123") for _ in range(r.randint(14, 20))),
    "tok": lambda r: "".join(r.choice("ABCxyz_-0189") for _ in range(r.randint(8, 30))),
    "Name": lambda r: r.choice(["Tom-Baker", "Ann", "Ann-Lee-Smith", "x"]),
    "run": lambda r: r.choice(["251103-081522", "251103-081522-Ann-Lee", "1251103-081522"]),
    "hexlong": lambda r: "".join(r.choice("0123456789abcdefG") for _ in range(r.randint(9, 24))),
    "toklong": lambda r: "".join(r.choice("ab-_٣9Z") for _ in range(r.randint(9, 30))),
    "mixed": lambda r: "".join(r.choice("aZ09") for _ in range(r.randint(8, 12))),
}
_HOSTILE_CHARS = "\t\n\r\x0b\x0c \u00a0\u2003\u3000\u1680\x1c\x85ſİı٣é😀<>'\"`?=&;:/-_.,@0123456789xXaZ"


def _message(r: random.Random) -> str:
    kind = r.random()
    if kind < 0.6:
        template = r.choice(_TEMPLATES)
        return re.sub(r"\{(\w+)\}", lambda m: _PIECES[m.group(1)](r), template)
    if kind < 0.85:
        parts = [re.sub(r"\{(\w+)\}", lambda m: _PIECES[m.group(1)](r), r.choice(_TEMPLATES)) for _ in range(2)]
        cut = r.randint(0, len(parts[0]))
        return parts[0][:cut] + r.choice(_HOSTILE_CHARS) + parts[1]
    return "".join(r.choice(_HOSTILE_CHARS + "abcdefghij") for _ in range(r.randint(0, 60)))


def _names(r: random.Random) -> list[str]:
    pool = ["Tom-Baker", "Ann-Lee", "lient", "ient>", "<cl", "t>x", "Zo", "Maria-Chen", "Ann Lee", ""]
    first = r.choice(pool)
    return r.choice([[], [first], [first, first], [first, r.choice(pool)]])


def test_mask_message_matches_the_frozen_implementation() -> None:
    r = random.Random(4711)
    for _ in range(30_000):
        message = _message(r)
        names = _names(r)
        assert mask_message(message, names) == _old_mask_message(message, names), (message, names)


def test_mask_message_matches_on_handwritten_edge_cases() -> None:
    cases = [
        "",
        "   ",
        "status code 503",
        "ſtatus code 503",
        "İTTP 404 and http 500 and HTTP/1.1 404",
        "abcdefghijklmnopqrstu-٣ and abcdefghijklmnopqrstuvw٣",
        "deadbeef٣cafe12 0x1f 0X1F 0xZ",
        "08:15:22 and ٠٨:١٥:٢٢ and 2025-11-03T08:15:22Z",
        "token aaaaaaaaaaaaaaaaaaaaaa-b1 and Unexpected 1234567890",
        "a\u00a0\u2003b\x1c\x1dc\x85d",
        "responded  with 404; Responded with 404; returned:404",
        "<client> lient client: Tom-Baker",
    ]
    for message in cases:
        for names in ([], ["lient"], ["lient", "lient"], ["t>x", "t>x"], ["Tom-Baker", "Tom-Baker"]):
            assert mask_message(message, names) == _old_mask_message(message, names), (message, names)
