"""Routing the one dispatcher's output to the gRPC streams and calls that asked for it.

The worker has one :class:`~snakepit_py._dispatcher.Dispatcher` for every RPC,
so ``--threads``, ``--max-inflight``, health and draining mean what they mean
over the Port. It is built with the *terms* codec (``encode`` returns the term
itself): the router gets each outgoing term before any encoding, looks at its
tag and call id, and hands it to its destination, which encodes it once in its
own codec — the launch codec for a Session, the request's codec for Call and
Stream. Nothing is encoded twice and nothing is decoded back.

Call ids: the dispatcher sees *internal* ids. A Session call keeps its own id
when no other call in flight uses it (so ``current_call().id`` is the id the
BEAM chose); otherwise, and for every Call/Stream, it gets a fresh id. ``routes``
maps internal id -> (destination, the id the destination knows).
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Any

from .._wire import (  # ChunkUnencodable: see StreamRoute.chunk
    BYE,
    CHUNK,
    DESCRIBE,
    ERROR,
    EVENT,
    HEALTH,
    LOG,
    OK,
    READY,
    ChunkUnencodable,
    error_map,
)
from ..codec import Atom, general_codec
from ..errors import BeamCallError, EncodeError

__all__ = ["TERMS", "Router", "SessionRoute", "CallRoute", "StreamRoute"]

# The dispatcher's codec in gRPC mode: terms pass through unencoded.
TERMS = general_codec("terms", lambda term: term, lambda term: term, tags=(OK, CHUNK))

_CALL_ID = Atom("call_id")
_BEAM_CALL, _BEAM_CANCEL = Atom("beam_call"), Atom("beam_cancel")
_END = None  # end of a Session's output queue


def unencodable(exc: EncodeError, what: str) -> dict:
    """The ``:unencodable`` error map for a result or chunk ``exc`` refused."""
    return error_map("unencodable", "EncodeError", f"the {what} cannot be encoded: {exc}",
                     None, type=exc.value_type or "")  # fmt: skip


class SessionRoute:
    """One Session stream: terms out in the launch codec, and its call ids."""

    def __init__(self, codec: Any) -> None:
        self.encode = codec.encode
        self.out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.calls: dict[Any, int] = {}  # the session's call id -> internal id
        self.closed = False

    def put(self, term: Any) -> None:
        """Encode and queue a term that needs no id translation (ready, event, bye, ...)."""
        if not self.closed:
            self.out.put(self.encode(term))

    def chunk(self, term: tuple, ext: Any) -> None:
        try:
            frame = self.encode((CHUNK, ext, term[2], term[3]))
        except EncodeError as exc:
            raise ChunkUnencodable(exc) from None
        if not self.closed:
            self.out.put(frame)

    def terminal(self, term: tuple, ext: Any, iid: int) -> None:
        if self.calls.get(ext) == iid:
            del self.calls[ext]
        if self.closed:
            return
        out = (term[0], ext, *term[2:])
        try:
            frame = self.encode(out)
        except EncodeError as exc:
            if term[0] is not OK:
                raise
            frame = self.encode((ERROR, ext, unencodable(exc, "result")))
        self.out.put(frame)

    def log(self, term: tuple, routes: dict) -> None:
        meta = term[3]
        iid = meta.get(_CALL_ID) if isinstance(meta, dict) else None
        if iid is not None:
            entry = routes.get(iid)
            meta = dict(meta)
            meta[_CALL_ID] = entry[1] if entry is not None and entry[0] is self else None
            term = (term[0], term[1], term[2], meta)
        self.put(term)

    def close(self) -> None:
        """No more output: the response stream ends after what is queued."""
        if not self.closed:
            self.closed = True
            self.out.put(_END)


class CallRoute:
    """One unary Call: holds its terminal term for the handler thread."""

    __slots__ = ("term", "_lock", "finished")

    def __init__(self) -> None:
        self.term: tuple | None = None
        self.finished = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def chunk(self, term: tuple, ext: Any) -> None:
        pass  # a streaming method called through Call: chunks are dropped, the result kept

    def terminal(self, term: tuple, ext: Any, iid: int) -> None:
        self.term = term
        self.finished = True
        self._lock.release()

    def wait(self, timeout: float = -1) -> tuple | None:
        """The terminal term, waiting for it (None on timeout)."""
        if self.term is None and not self._lock.acquire(timeout=timeout):
            return None
        return self.term


class StreamRoute:
    """One Stream RPC: chunks (encoded in the request codec) and the terminal, in order."""

    __slots__ = ("encode", "items", "finished")

    def __init__(self, codec: Any) -> None:
        self.encode = codec.encode
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.finished = False

    def chunk(self, term: tuple, ext: Any) -> None:
        # Raised from ``write``, ChunkUnencodable makes the dispatcher end the
        # call with ``:unencodable`` and close its generator, as over the Port.
        try:
            data = self.encode(term[3])
        except EncodeError as exc:
            raise ChunkUnencodable(exc) from None
        self.items.put(data)

    def terminal(self, term: tuple, ext: Any, iid: int) -> None:
        self.finished = True
        self.items.put(term)


class Router:
    """The dispatcher's ``write``: sends each outgoing term where it belongs."""

    def __init__(self) -> None:
        self.routes: dict[Any, tuple[Any, Any]] = {}
        self.sessions: list[SessionRoute] = []
        self._fresh = itertools.count(1 << 48)
        self._local = threading.local()
        # (1.1) The Session that last sent {:beam_functions}: every beam call goes
        # there (beam refs are the dispatcher's own, unique across sessions).
        self.beam_session: SessionRoute | None = None

    # --- ids ------------------------------------------------------------------------------

    def register(self, dest: Any, ext: Any = None) -> int:
        """Give a call (or request) of ``dest`` an internal id; ``ext`` is the id ``dest`` knows."""
        routes, entry = self.routes, (dest, ext)
        # setdefault is one atomic step: two threads never get the same id.
        if type(ext) is int and ext >= 0 and routes.setdefault(ext, entry) is entry:
            return ext
        iid = next(self._fresh)
        while routes.setdefault(iid, entry) is not entry:
            iid = next(self._fresh)
        return iid

    def forget(self, iid: int) -> None:
        """Drop a route whose answer will not come (a request answered without its id)."""
        self.routes.pop(iid, None)

    def set_origin(self, dest: Any) -> None:
        """Frames written by this thread that carry no routable id go to ``dest`` (or nowhere)."""
        self._local.origin = dest

    # --- output ---------------------------------------------------------------------------

    def write(self, term: Any) -> None:
        tag = term[0]
        if tag is CHUNK:
            entry = self.routes.get(term[1])
            if entry is not None:
                entry[0].chunk(term, entry[1])
            return
        if tag is OK or tag is ERROR or tag == HEALTH or tag == DESCRIBE:
            entry = self.routes.pop(term[1], None)
            if entry is not None:
                entry[0].terminal(term, entry[1], term[1])
                return
            origin = getattr(self._local, "origin", None)
            if origin is not None:
                origin.put(term)
            return
        # Terms other than the hot three may carry an equal Atom built elsewhere
        # (the log handler has its own): compare by value.
        if tag == LOG:
            for session in list(self.sessions):
                session.log(term, self.routes)
            return
        if tag == READY:
            origin = getattr(self._local, "origin", None)
            if origin is not None:
                origin.put(term)
            return
        if tag == EVENT or tag == BYE:
            for session in list(self.sessions):
                session.put(term)
            return
        if tag == _BEAM_CALL or tag == _BEAM_CANCEL:
            self._beam(term)

    def _beam(self, term: tuple) -> None:
        """A beam call (or its cancel) goes to the Session serving BEAM functions.

        ``call_id`` becomes the id that Session knows, or nil when the call it
        was made under came from elsewhere (another Session, a unary Call).
        """
        session = self.beam_session
        if session is None or session.closed:
            if term[0] == _BEAM_CANCEL:
                return
            raise BeamCallError(
                "cancelled", "CallCancelled", "the gRPC session serving BEAM functions has ended"
            )
        if term[0] == _BEAM_CALL:
            opts = dict(term[4])
            entry = self.routes.get(opts.get(_CALL_ID))
            opts[_CALL_ID] = entry[1] if entry is not None and entry[0] is session else None
            term = (*term[:4], opts)
        session.put(term)
