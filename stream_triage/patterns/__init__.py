"""Pattern packs: the shipped default (``default.toml``) and user files in the same format.

Loading validates everything and reports every problem of a file at once, each with file, line and
pattern id, so a broken user pack is fixed in one go.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import regex

from stream_triage.errors import PatternError
from stream_triage.records import Severity

_KEYS = {"id", "severity", "regex", "description", "unless", "levels", "not_levels", "case_sensitive", "min_value"}


@dataclass(slots=True, frozen=True)
class PatternSpec:
    """One pattern as written in a pack. ``origin`` is ``file:line`` for error messages."""

    id: str
    severity: Severity
    regex: str
    description: str = ""
    unless: str | None = None
    levels: frozenset[str] | None = None
    not_levels: frozenset[str] = frozenset()
    case_sensitive: bool = False
    min_value: int | str | None = None
    origin: str = ""


def default_pack_path() -> Path:
    """Path of the pack shipped inside the package."""
    return Path(str(resources.files("stream_triage.patterns").joinpath("default.toml")))


def load_pack(path: str | Path) -> list[PatternSpec]:
    """Load and validate one pack file; raises ``PatternError`` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PatternError(f"{path}: cannot read pattern pack: {exc.strerror or exc}") from None
    return parse_pack(text, str(path))


def parse_pack(text: str, name: str = "<patterns>") -> list[PatternSpec]:
    """Parse pack TOML text; ``name`` is used in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PatternError(f"{name}: not valid TOML: {exc}") from None
    entries = data.get("pattern", [])
    problems: list[str] = []
    unknown_top = set(data) - {"pattern"}
    if unknown_top:
        problems.append(f"{name}: unknown top-level keys {sorted(unknown_top)}; patterns go in [[pattern]] tables")
    if not isinstance(entries, list):
        raise PatternError(f"{name}: 'pattern' must be an array of tables ([[pattern]])")
    lines = text.splitlines()
    seen: set[str] = set()
    specs: list[PatternSpec] = []
    for index, entry in enumerate(entries):
        pid = str(entry.get("id", f"#{index + 1}"))
        where = f"{name}:{_line_of(lines, pid, index)} (pattern {pid!r})"
        errs = _validate_entry(entry, pid, seen)
        problems.extend(f"{where}: {e}" for e in errs)
        seen.add(pid)
        if errs:
            continue
        levels = entry.get("levels")
        specs.append(
            PatternSpec(
                id=pid,
                severity=Severity(entry["severity"]),
                regex=entry["regex"],
                description=entry.get("description", ""),
                unless=entry.get("unless"),
                levels=frozenset(x.upper() for x in levels) if levels else None,
                not_levels=frozenset(x.upper() for x in entry.get("not_levels", [])),
                case_sensitive=bool(entry.get("case_sensitive", False)),
                min_value=entry.get("min_value"),
                origin=where,
            )
        )
    if problems:
        raise PatternError("invalid pattern pack:\n  - " + "\n  - ".join(problems))
    return specs


def _validate_entry(entry: dict, pid: str, seen: set[str]) -> list[str]:
    errs: list[str] = []
    if not isinstance(entry.get("id"), str) or not entry.get("id"):
        errs.append("missing 'id' (a short slug such as 'db-timeout')")
    elif pid in seen:
        errs.append("duplicate id; ids must be unique across all packs")
    for key in sorted(set(entry) - _KEYS):
        errs.append(f"unknown key {key!r}; valid keys: {', '.join(sorted(_KEYS))}")
    sev = entry.get("severity")
    if sev not in {s.value for s in Severity}:
        errs.append(f"severity must be CRITICAL, ERROR or WARNING, got {sev!r}")
    rx = entry.get("regex")
    if not isinstance(rx, str):
        errs.append("missing 'regex' (use '' together with 'levels' to match on level alone)")
    elif rx == "" and not entry.get("levels"):
        errs.append("an empty regex matches every line; give 'levels' or a real regex")
    groups = -1  # capture groups of a compiled regex; -1 when it does not compile
    for key in ("regex", "unless"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            try:
                compiled = regex.compile(value)
            except regex.error as exc:
                errs.append(f"{key} does not compile: {exc}")
            else:
                if key == "regex":
                    groups = compiled.groups
    for key in ("levels", "not_levels"):
        value = entry.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            errs.append(f'{key} must be a list of level names such as ["ERROR", "WARN"]')
    mv = entry.get("min_value")
    if mv is not None and not isinstance(mv, int | str):
        errs.append("min_value must be an integer or the name of a [patterns] setting")
    if mv is not None and groups == 0:
        errs.append("min_value needs a capture group in regex around the number")
    return errs


def _line_of(lines: list[str], pid: str, index: int) -> int:
    """1-based line of the pattern's ``id = ...`` line, else of its ``[[pattern]]`` header.

    The id line is looked for inside the entry's own table, so a duplicate id points at the duplicate.
    """
    header = 0
    count = 0
    for i, line in enumerate(lines, 1):
        if line.strip() == "[[pattern]]":
            count += 1
            if count == index + 1:
                header = i
            elif count > index + 1:
                break
        elif header and line.replace(" ", "") in (f'id="{pid}"', f"id='{pid}'"):
            return i
    return header
