"""The ``render_tail`` source: Render's live log WebSocket, for deployments on Render itself.

Render web services expose only HTTP, so a stream-triage running on Render cannot take the TLS syslog
stream; it subscribes to the logs API instead. Reconnects, gap backfill and id dedupe are the client's
job (``render_api``); this task only feeds what arrives into the pipeline and keeps going on errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from stream_triage.config import RenderTailSourceConfig
from stream_triage.runner import PipelineRunner
from stream_triage.sources.files import split_lines
from stream_triage.sources.render_api import PermanentSourceError, RenderLogsClient, SourceError

log = logging.getLogger("stream_triage.sources.render_tail")

SOURCE = "render_tail"


class RenderTailSource:
    """Background task: subscribe, submit, and on failure retry after a pause."""

    def __init__(self, config: RenderTailSourceConfig, runner: PipelineRunner, api_key: str) -> None:
        self.config = config
        self.runner = runner
        self.client = RenderLogsClient(api_key, config.owner_id, base_url=config.api_base_url)
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    async def start(self) -> None:
        """Start tailing in the background."""
        self._task = asyncio.create_task(self._run(), name="render-tail")

    async def _run(self) -> None:
        pause = 5.0
        while True:
            try:
                stream = self.client.subscribe(self.config.resources)
                async with contextlib.aclosing(stream):
                    async for item in stream:
                        self.connected = True
                        await self.runner.submit(SOURCE, list(split_lines(item.to_raw())))
            except asyncio.CancelledError:
                raise
            except PermanentSourceError as exc:
                self.connected = False
                log.error("render_tail stopped: %s", exc)
                return
            except SourceError as exc:
                self.connected = False
                log.warning("render_tail: %s; resubscribing in %.0f s", exc, pause)
            except Exception:
                self.connected = False
                log.exception("render_tail failed; resubscribing in %.0f s", pause)
            await asyncio.sleep(pause)

    async def stop(self) -> None:
        """Stop tailing and close the HTTP session."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.client.close()
