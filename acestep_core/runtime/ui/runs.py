"""Generating from the page: one run at a time per device, progress that follows the phases, one player per
clip, and clips that belong to the session that made them.

No Gradio here. A clip is served by :func:`clip_route` only to the browser that generated it (an HttpOnly
cookie set by :class:`BrowserCookie` when the page is first loaded, checked against the clip's owner), under
an unguessable name; everything a session wrote (its clips, its uploaded tables) is removed when the session
ends (:meth:`Runs.end_session`, called when the browser tab goes away) and the rest when the server stops.
"""

from __future__ import annotations

import queue
import secrets
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from acestep_core.runtime.ui.render import esc
from acestep_core.types import Resolution
from acestep_core.vocabulary import PHASES

CLIP_ROUTE = "/acestep-clip"
BROWSER_COOKIE = "acestep-ui-browser"
UNITS = {"lm": "token", "text_encoder": "", "dit": "step", "vae": "clip"}
"""What each phase counts in its progress events."""


def counted(count: int, unit: str) -> str:
    """``3 steps``, ``1 step``; a phase that counts nothing in particular: empty."""
    return f"{count} {unit}{'' if count == 1 else 's'}" if unit else ""


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


@dataclass
class _Session:
    paths: set[Path] = field(default_factory=set)
    clips: set[str] = field(default_factory=set)
    cancel: Any = None


class Runs:
    """What the page's runs hold across sessions: a lock per device, each session's cancel handle, the
    clips each browser may fetch, and what to remove when a session ends."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._locks: dict[str, threading.Lock] = {}
        self._sessions: dict[str, _Session] = {}
        self._clips: dict[str, tuple[str, Path]] = {}
        self._guard = threading.Lock()

    def _session(self, session: str) -> _Session:
        return self._sessions.setdefault(session, _Session())

    # ------------------------------------------------------------------------------- running
    def lock_for(self, device: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(device, threading.Lock())

    def register(self, session: str, handle: Any) -> None:
        with self._guard:
            self._session(session).cancel = handle

    def forget(self, session: str, handle: Any) -> None:
        with self._guard:
            state = self._sessions.get(session)
            if state is not None and state.cancel is handle:
                state.cancel = None

    def cancel(self, session: str) -> bool:
        with self._guard:
            state = self._sessions.get(session)
            handle = state.cancel if state is not None else None
        if handle is None:
            return False
        handle.cancel()
        return True

    # ------------------------------------------------------------------------------- files
    def run_folder(self, session: str) -> Path:
        """A new folder for one run of ``session``, removed with the session."""
        folder = self.work / "clips" / secrets.token_hex(8)
        self.keep(session, folder)
        return folder

    def keep(self, session: str, path: Path) -> None:
        """Remove ``path`` (a file or a folder) when ``session`` ends."""
        with self._guard:
            self._session(session).paths.add(path)

    def publish(self, session: str, browser: str | None, path: Path) -> str | None:
        """The URL of clip ``path`` for ``browser`` (None: a client without the page's cookie is given none)."""
        if not browser:
            return None
        token = secrets.token_urlsafe(24)
        with self._guard:
            self._clips[token] = (browser, path)
            self._session(session).clips.add(token)
        return f"{CLIP_ROUTE}/{token}"

    def clip_for(self, token: str, browser: str | None) -> Path | None:
        """The clip named ``token`` when ``browser`` made it and it still exists, else None."""
        with self._guard:
            owner, path = self._clips.get(token, ("", Path()))
        if not browser or not secrets.compare_digest(owner, browser) or not path.is_file():
            return None
        return path

    def end_session(self, session: str) -> None:
        """The session is gone: stop its run and remove everything it wrote."""
        self.cancel(session)
        with self._guard:
            state = self._sessions.pop(session, None)
            if state is None:
                return
            for token in state.clips:
                self._clips.pop(token, None)
        for path in state.paths:
            _remove(path)

    def close(self) -> None:
        """The server stops: end every session."""
        with self._guard:
            sessions = list(self._sessions)
        for session in sessions:
            self.end_session(session)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- serving clips
def clip_route(runs: Runs) -> Route:
    """``GET /acestep-clip/<name>``: the clip, to the browser that made it; 404 to anyone else."""

    async def serve(request: Request) -> Response:
        path = runs.clip_for(request.path_params["token"], request.cookies.get(BROWSER_COOKIE))
        if path is None:
            return PlainTextResponse("no such clip", status_code=404)
        return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "private, no-store"})

    return Route(CLIP_ROUTE + "/{token}", serve, methods=["GET", "HEAD"])


class BrowserCookie:
    """ASGI middleware: a browser without the page's cookie gets one (random, HttpOnly, SameSite=Strict)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http" or _has_cookie(scope):
            await self.app(scope, receive, send)
            return
        cookie = f"{BROWSER_COOKIE}={secrets.token_urlsafe(24)}; Path=/; HttpOnly; SameSite=Strict".encode()

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _has_cookie(scope: MutableMapping[str, Any]) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header is a missing cookie
                return False
            return BROWSER_COOKIE in jar
    return False


# --------------------------------------------------------------------------------------------- progress
class Progress:
    """Each phase's state from the pipeline's events: waiting, running (its count), done, or skipped."""

    def __init__(self, skipped: set[str]) -> None:
        self.skipped = skipped
        self.counts: dict[str, tuple[int, int]] = {}
        self.done: dict[str, str] = {}

    def update(self, phase: str, done: int, total: int) -> None:
        self.counts[phase] = (done, total)
        if total and done == total:
            self.done[phase] = counted(done, UNITS.get(phase, ""))

    def finish(self, seconds: dict[str, float]) -> None:
        for phase, spent in seconds.items():
            counted = self.done.get(phase, "")
            self.done[phase] = f"{counted + ', ' if counted else ''}{spent:.2f} s"

    def current(self) -> str:
        return next((p for p in reversed(PHASES) if p in self.counts and p not in self.done), "")

    def html(self, status: str) -> str:
        rows = [self._row(phase) for phase in PHASES]
        return f'<div class="ac-chart ac-progress"><p id="gen-status">{esc(status)}</p>{"".join(rows)}</div>'

    def _row(self, phase: str) -> str:
        if phase in self.skipped:
            state, share, label = "skipped", 0.0, "skipped (no LM)" if phase == "lm" else "skipped"
        elif phase in self.done:
            state, share, label = "done", 100.0, f"done · {self.done[phase]}".rstrip(" ·")
        elif phase in self.counts:
            done, total = self.counts[phase]
            state, share = "running", (100 * done / total if total else 0.0)
            label = f"{done}/{counted(total, UNITS.get(phase, '')) or total}" if total else "loading…"
        else:
            state, share, label = "waiting", 0.0, "waiting"
        return (
            f'<div class="ac-row" data-phase="{phase}" data-state="{state}"><span class="ac-name">{phase}</span>'
            f'<div class="ac-track"><div class="ac-bar" style="width:{share:.0f}%"></div></div>'
            f'<span class="ac-val">{esc(label)}</span></div>'
        )


def players_html(clips: list[tuple[str | None, float, str]]) -> str:
    """One player per clip: ``(url, seconds, file name)``; a clip without a URL is named, with why."""
    items = []
    for number, (url, seconds, name) in enumerate(clips, start=1):
        caption = f"clip {number}: {seconds:g} s ({name})"
        if url is None:
            items.append(
                f'<figure class="ac-clip"><figcaption>{esc(caption)}: not served to this client</figcaption></figure>'
            )
            continue
        items.append(
            f'<figure class="ac-clip" data-clip="{number}"><figcaption>{esc(caption)}</figcaption>'
            f'<audio controls preload="metadata" src="{esc(url)}"></audio></figure>'
        )
    return f'<div class="ac-players" data-clips="{len(clips)}">{"".join(items)}</div>' if clips else ""


# --------------------------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class RunRequest:
    resolution: Resolution
    size: str
    steps: int
    seed: int
    session: str
    browser: str | None


def run_generation(request: RunRequest, runs: Runs) -> Iterator[tuple[str, str, str]]:
    """Run ``request`` on its device, one run at a time per device; yields (progress, players, report) HTML
    and text as the run goes. Raises what the pipeline raises, but never for a cancelled run."""
    from acestep_core.runtime.pipeline import CancelHandle, GenerationCancelledError, render_report, run
    from acestep_core.runtime.pipeline.session import device_for

    resolution = request.resolution
    progress = Progress(set() if _lm_runs(resolution) else {"lm"})
    cancel = CancelHandle()
    runs.register(request.session, cancel)
    try:
        device = str(device_for(resolution))
        lock = runs.lock_for(device)
        while not lock.acquire(timeout=0.5):
            if cancel.cancelled:
                yield progress.html("cancelled while waiting for the device; nothing ran"), "", ""
                return
            yield progress.html(f"queued: another run is using {device}"), "", ""
        try:
            events: queue.Queue[tuple[str, int, int]] = queue.Queue()
            outcome: dict[str, Any] = {}
            folder = runs.run_folder(request.session)

            def worker() -> None:
                try:
                    outcome["result"] = run(
                        resolution,
                        out_dir=folder,
                        size=request.size,
                        steps=request.steps,
                        seed=request.seed,
                        cancel=cancel,
                        progress=False,
                        on_progress=lambda p, d, t: events.put((p, d, t)),
                    )
                except BaseException as error:  # noqa: BLE001 - handed to the page's thread
                    outcome["error"] = error

            thread = threading.Thread(target=worker, name=f"acestep-ui-run-{request.session[:8]}", daemon=True)
            thread.start()
            yield progress.html(f"running on {device}"), "", ""
            while thread.is_alive() or not events.empty():
                if _drain(events, progress):
                    yield progress.html(f"running on {device}: {progress.current()}"), "", ""
            thread.join()
        finally:
            lock.release()
    finally:
        runs.forget(request.session, cancel)
    failure = outcome.get("error")
    if isinstance(failure, GenerationCancelledError):
        yield progress.html("cancelled: the run stopped, its models were released, no files were kept"), "", ""
        return
    if failure is not None:
        raise failure
    result = outcome["result"]
    progress.finish({phase.name: phase.seconds for phase in result.phases})
    players = [
        (runs.publish(request.session, request.browser, Path(clip.path)), clip.duration_s, Path(clip.path).name)
        for clip in result.clips
    ]
    status = (
        f"done: {len(result.clips)} clip(s) in {result.seconds:.1f} s "
        f"({request.size} models, {counted(request.steps, 'step')}, seed {request.seed})"
    )
    yield progress.html(status), players_html(players), render_report(result)


def _lm_runs(resolution: Resolution) -> bool:
    from acestep_core.runtime.pipeline.run import lm_to_run

    return lm_to_run(resolution) is not None


def _drain(events: queue.Queue[tuple[str, int, int]], progress: Progress) -> bool:
    """Apply every waiting event (waiting up to 0.25 s for the first); True when any arrived."""
    try:
        progress.update(*events.get(timeout=0.25))
    except queue.Empty:
        return False
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:
        try:
            progress.update(*events.get_nowait())
        except queue.Empty:
            break
    return True
