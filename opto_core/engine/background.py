"""One event loop running in a daemon thread: where async workflows run when the caller is synchronous.

The asyncio executor runs every example's coroutine on such a loop, and adapters whose framework is
async-only (AutoGen) run their conversations on one, so that framework objects that bind to the
first event loop they see always see the same loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, AsyncIterator, TypeVar

T = TypeVar("T")

log = logging.getLogger("opto")


class BackgroundLoop:
    """An event loop in its own daemon thread, started on first use, stopped (and restartable) by `stop`."""

    def __init__(self, name: str, reentry_hint: str = "inside async code, await the coroutine instead") -> None:
        self.name = name
        self.reentry_hint = reentry_hint  # what to do instead of a blocking call from the loop thread
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    while True:
                        try:
                            loop.run_forever()
                            break
                        except (SystemExit, KeyboardInterrupt) as exc:
                            # asyncio re-raises these out of run_forever when a task raised them: code
                            # running on the loop must not end the loop (or the process) for everyone
                            log.warning(
                                "a task on the %s loop raised %s; the loop goes on", self.name, type(exc).__name__
                            )
                    _finish(loop)

                self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    @property
    def thread(self) -> threading.Thread | None:
        """The thread that runs every coroutine (None before first use)."""
        return self._thread

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run ``coro`` on the loop from another thread and return its result."""
        loop = self.loop
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                f"a blocking call was made from the {self.name} loop thread itself (it would wait "
                f"for itself); {self.reentry_hint}"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def call(self, coro: Any) -> Any:
        """Await ``coro`` on this loop from async code on any loop (directly when already on it).

        The caller's loop is not blocked; cancelling the caller cancels ``coro`` on this loop.
        """
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def stream(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """Iterate an async iterator on this loop, yielding its items to async code on any loop.

        Each step runs here (so whatever the iterator binds to a loop binds to this one); closing
        the stream early closes the iterator here too.
        """

        async def step() -> T:
            return await items.__anext__()

        try:
            while True:
                try:
                    item = await self.call(step())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                await self.call(close())

    def responsive(self, within: float = 0.5) -> bool:
        """Whether the loop runs a callback within ``within`` seconds (False: something blocks its thread)."""
        with self._lock:
            loop = self._loop
        if loop is None:
            return True
        answered = threading.Event()
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # closed
            return False
        return answered.wait(within)

    def abandon(self) -> None:
        """Give up on a loop whose thread is blocked (a run that never yields): the next use starts a new one.

        The old loop stops as soon as its thread is free again; its thread is a daemon, so it never
        keeps the process from exiting.
        """
        with self._lock:
            loop, self._loop, self._thread = self._loop, None, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)

    def stop(self, drain_seconds: float = 5.0) -> None:
        """Cancel what still runs on the loop (waiting up to ``drain_seconds``), stop it and join its thread."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None:
            return

        async def drain() -> None:  # cancelled runs finish cancelling before the loop stops
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout=drain_seconds)
        except Exception:  # a run that ignores cancellation: stop anyway
            pass
        loop.call_soon_threadsafe(loop.stop)  # the loop's own thread then closes it (`_finish`)
        if thread is not None:
            thread.join(timeout=drain_seconds)


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """After the loop stopped: cancel what is left on it, let it finish cancelling, close the loop.

    A task left pending on a loop that is closed later fails when it is garbage-collected (its
    cleanup needs the loop), and that noise can come from any thread at any time.
    """
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except BaseException as exc:  # a task that will not cancel, or raises on the way out: close anyway
        log.debug("closing the event loop: %s", exc)
    finally:
        loop.close()
