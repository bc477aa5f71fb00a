"""A task channel: a socket pair between the web process and one worker, for its tasks.

pebble starts each worker, reports its death and starts a replacement; the tasks themselves go
over a :class:`Channel` rather than through pebble's scheduling. pebble hands a task from the
caller to a scheduling thread, which writes it to the worker; the worker acknowledges it, then
answers, and a third thread reads both messages and sets the task's future, which wakes the
caller: four thread hand-overs, 0.36 to 0.43 ms for a task that does nothing on this two-core
machine, against 0.07 ms for the same task over a socket the event loop writes and reads itself
(``/work`` measurements, Python 3.11).

Each channel is one pebble task that never ends: :func:`serve`, which reads a task from its end
of the socket pair, runs it (``app.workers.process.run_task``) and writes back its result or
its error, until the web process closes the channel or the worker dies. A worker that dies
closes its end, so a caller waiting for an answer reads the end of the stream (and pebble's
task of :func:`serve` ends too, which shuts the web process's end should the worker die before
it took its end). The web process then opens a new channel for the replacement.

Frames: an 8-byte length, then a pickle: ``(fn, args)`` one way, ``(True, result)`` or
``(False, error, traceback text)`` the other.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
import threading
import traceback
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from typing import Any

HEADER = struct.Struct("!Q")
FIRST_READ = 65_536
"""Bytes asked for by the first read of an answer (most answers fit: one read, no more)."""


class ChannelClosed(ConnectionError):
    """The worker's end of the channel closed: the worker died (or is being replaced)."""


class RemoteTraceback(Exception):
    """The traceback of an error raised in a worker, as its ``__cause__``."""

    def __str__(self) -> str:
        return self.args[0]


def serve(end: bytes) -> None:
    """In a worker: run the tasks that come over the channel ``end`` (a pickled socket, as
    :meth:`Channel.open` sends it) until it closes."""
    from app.workers.process import run_task

    sock: socket.socket = pickle.loads(end)
    try:
        while True:
            try:
                fn, args = pickle.loads(_read(sock))
            except ChannelClosed:
                return
            try:
                answer = (True, run_task(fn, args))
            except Exception as error:
                answer = (False, error, traceback.format_exc())
            sock.sendall(_frame(answer, answer=True))
    finally:
        sock.close()


class Channel:
    """The web process's end of one worker's task channel (one task at a time: the pool gives
    a worker to one task at a time)."""

    def __init__(self, sock: socket.socket, served: Any):
        self.sock = sock
        self.served = served
        """pebble's future of :func:`serve` in the worker (done once the worker died)."""
        self.closed = False
        self._blocking = True
        self._lock = threading.Lock()

    @classmethod
    def open(cls, process: Any) -> Channel:
        """A new channel to the worker of ``process`` (a ``pebble.ProcessPool`` of one worker,
        which starts :func:`serve` once its worker is up)."""
        mine, theirs = socket.socketpair()
        end = ForkingPickler.dumps(theirs)  # the worker takes it from the web process's sharer
        theirs.close()
        channel = cls(mine, process.schedule(serve, args=(bytes(end),)))
        channel.served.add_done_callback(lambda _: channel.shut())
        return channel

    # -- blocking, from a thread
    def call(self, fn: Callable, args: tuple) -> Any:
        """Run ``fn(*args)`` in the worker and wait for its answer (:class:`ChannelClosed` when
        the worker dies first)."""
        self._mode(blocking=True)
        try:
            self.sock.sendall(_frame((fn, args)))
            return _answer(_read(self.sock))
        except OSError as error:
            raise ChannelClosed(str(error)) from error

    # -- from the event loop
    async def call_async(self, fn: Callable, args: tuple) -> Any:
        """:meth:`call` awaited in the event loop, with no thread between it and the worker."""
        loop = asyncio.get_running_loop()
        data = _frame((fn, args))
        self._mode(blocking=False)
        try:
            await loop.sock_sendall(self.sock, data)
            return _answer(await self._read_async(loop))
        except OSError as error:
            raise ChannelClosed(str(error)) from error

    async def _read_async(self, loop: asyncio.AbstractEventLoop) -> memoryview:
        buffer = bytearray(FIRST_READ)
        filled = 0
        while filled < HEADER.size:
            filled += await _received(loop.sock_recv_into(self.sock, memoryview(buffer)[filled:]))
        total = HEADER.size + HEADER.unpack_from(buffer)[0]
        if total > len(buffer):
            larger = bytearray(total)
            larger[:filled] = memoryview(buffer)[:filled]
            buffer = larger
        while filled < total:
            view = memoryview(buffer)[filled:total]
            filled += await _received(loop.sock_recv_into(self.sock, view))
        return memoryview(buffer)[HEADER.size : total]

    # -- ending
    def shut(self) -> None:
        """Wake whoever waits on the channel (from any thread): it reads the end of the
        stream. Called when the worker dies."""
        with self._lock:
            if not self.closed:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.sock.close()

    def _mode(self, blocking: bool) -> None:
        if self._blocking != blocking:
            self.sock.setblocking(blocking)
            self._blocking = blocking


def _frame(value: Any, answer: bool = False) -> bytes:
    """``value`` pickled, after its length. An answer that cannot be pickled (a result, or an
    error of a library's own) goes as a ``TypeError`` that says what it was; a task that cannot
    be pickled raises in the caller."""
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception as error:
        if not answer:
            raise
        what = "result" if value[0] else f"error ({value[1]!r})"
        text = value[2] if len(value) > 2 else ""
        data = pickle.dumps(
            (False, TypeError(f"the task's {what} cannot be sent back: {error}"), text)
        )
    return HEADER.pack(len(data)) + data


def _read(sock: socket.socket) -> memoryview:
    """One frame's pickle, read from a blocking socket."""
    header = _read_exactly(sock, HEADER.size)
    return _read_exactly(sock, HEADER.unpack(header)[0])


def _read_exactly(sock: socket.socket, size: int) -> memoryview:
    buffer = bytearray(size)
    view, filled = memoryview(buffer), 0
    while filled < size:
        received = sock.recv_into(view[filled:])
        if not received:
            raise ChannelClosed("the worker's end of the channel closed")
        filled += received
    return view


async def _received(reading: Any) -> int:
    received = await reading
    if not received:
        raise ChannelClosed("the worker's end of the channel closed")
    return received


def _answer(data: memoryview) -> Any:
    answer = pickle.loads(data)
    if answer[0]:
        return answer[1]
    _, error, text = answer
    if text:
        error.__cause__ = RemoteTraceback(text)
    raise error
