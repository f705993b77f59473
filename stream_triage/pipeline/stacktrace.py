"""Continuation lines and stack traces (Node, Python, Java): pure functions over text."""

from __future__ import annotations

import re

# Lines that never start an event of their own: they continue the preceding line of the same source.
_CONTINUATION = re.compile(
    r"""^(?:
        [ \t]                                   # indented: frames, Python source lines, JSON bodies
      | Traceback\ \(most\ recent\ call\ last\)
      | Caused\ by:
      | During\ handling\ of\ the\ above\ exception
      | The\ above\ exception\ was\ the\ direct\ cause
      | [}\]][,;)]*$                            # closing an object dumped over several lines
    )""",
    re.VERBOSE,
)
# The exception line that ends a Python traceback, when it follows the frames.
_PY_EXC_TAIL = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Warning|Interrupt|Exit|Failure)\b(?::|$)")

_NODE_FRAME = re.compile(
    r"^\s+at (?:async )?(?:(?P<fn>[^\s(]+(?: \[as [^\]]+\])?) \()?(?P<file>[^():]+):\d+(?::\d+)?\)?\s*$"
)
_PY_FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line \d+(?:, in (?P<fn>\S+))?')
_JAVA_FRAME = re.compile(r"^\s+at (?P<fn>[\w$.<>/]+)\((?P<file>[^:)]*)(?::\d+)?\)")
_TRACE_LINE = re.compile(
    r"^(?:\s+at\s|\s+File \"|Traceback \(|Caused by:|\s+\.\.\. \d+ (?:more|common frames))"
    r"|^\s*[A-Za-z_][\w.$]*(?:Error|Exception)\b"
)
_VENDOR = (
    "node_modules",
    "node:internal",
    "internal/",
    "site-packages",
    "dist-packages",
    "/usr/lib/python",
    "<anonymous>",
)
_JAVA_VENDOR = ("java.", "javax.", "jdk.", "sun.", "kotlin.", "org.springframework.", "io.netty.")
_APP_ROOTS = ("/opt/render/project/src/", "/app/", "/usr/src/app/", "/srv/", "/home/")


def is_continuation(text: str, in_traceback: bool = False) -> bool:
    """Whether an untagged line continues the previous event rather than starting a new one."""
    if not text:
        return False
    if _CONTINUATION.match(text) is not None:
        return True
    return in_traceback and _PY_EXC_TAIL.match(text) is not None


# A JVM logger's head line (logback / log4j / Spring Boot): the exception it logs follows unindented.
_JVM_LOG_HEAD = re.compile(
    r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[.,]\d{3}\S*\s+(?:\[[^\]]*\]\s+)?(?:ERROR|WARN|FATAL|SEVERE)\b"
)


def starts_traceback(text: str) -> bool:
    """Whether the line is followed by an unindented exception line that belongs to it.

    That is a Python traceback (its final exception line) or a JVM logger's WARN/ERROR head line
    (the logged exception, ``java.lang.IllegalStateException: …``, comes on the next line).
    """
    if text.startswith(("Traceback (most recent call last)", "During handling", "The above exception")):
        return True
    return text[:1].isdigit() and _JVM_LOG_HEAD.match(text) is not None


def is_trace_line(text: str) -> bool:
    """Whether a continuation line belongs in the extracted stack trace (frames, causes, exceptions)."""
    return _TRACE_LINE.match(text) is not None


def trace_lines(lines: list[str]) -> list[str]:
    """The stack trace among an event's continuation lines: frames, causes and exception lines, plus
    the source lines (and ``^^^`` markers) Python prints under its frames, so its trace stays whole.
    Other continuation lines, such as a dumped JSON body, are context only.
    """
    out: list[str] = []
    in_python = False
    for line in lines:
        if is_trace_line(line):
            out.append(line)
            in_python = (
                line.startswith("Traceback (") or _PY_FRAME.match(line) is not None or (in_python and line[:1] in " \t")
            )
        elif in_python and line[:1] in " \t":
            out.append(line)
        else:
            in_python = False
    return out


def top_app_frame(frames: list[str]) -> str | None:
    """``function (file)`` of the innermost frame in the app's own code, without line numbers.

    Node and Java print the innermost frame first, Python last. Frames in ``node_modules``,
    ``node:internal``, site-packages and the Java platform are skipped. Line numbers are dropped
    because they move with every deploy while the defect stays the same.
    """
    python_frames: list[str] = []
    for line in frames:
        m = _NODE_FRAME.match(line)
        if m is not None and "(" not in (m.group("file") or ""):
            file = m.group("file")
            if not any(v in file for v in _VENDOR):
                return _format(m.group("fn"), file)
            continue
        m = _JAVA_FRAME.match(line)
        if m is not None:
            fn = m.group("fn")
            if not fn.startswith(_JAVA_VENDOR):
                return _format(fn, m.group("file"))
            continue
        m = _PY_FRAME.match(line)
        if m is not None and not any(v in m.group("file") for v in _VENDOR):
            python_frames.append(_format(m.group("fn"), m.group("file")))
    return python_frames[-1] if python_frames else None


def _format(fn: str | None, file: str) -> str:
    for root in _APP_ROOTS:
        if file.startswith(root):
            file = file[len(root) :]
            break
    return f"{fn} ({file})" if fn else file
