"""The ``snakepit.v1.Worker`` RPCs, over the one dispatcher (see ``_grpc_router``)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from .._dispatcher import Dispatcher
from .._wire import OK
from ..codec import Atom
from ..errors import DecodeError, EncodeError
from ._grpc_common import ERROR_KEY, SERVICE, STATUS, error_to_proto, request_codec
from ._grpc_router import CallRoute, Router, SessionRoute, StreamRoute, unencodable

__all__ = ["WorkerService", "SyncThreads", "import_messages"]


class _Messages:
    """Stands for the generated module until it is imported.

    Importing protobuf and the generated code costs about a sixth of the
    worker's start; it is done after the ``SNAKEPIT_READY`` line (by
    ``import_messages``, or by the first RPC, whichever comes first).
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(import_messages(), name)


pb: Any = _Messages()


def import_messages() -> Any:
    """Import the generated message classes (idempotent); returns the module."""
    global pb
    from .._proto.snakepit.v1 import worker_pb2

    pb = worker_pb2
    return worker_pb2


def _parser(name: str) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        return getattr(pb, name).FromString(data)

    return parse


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


_CALL, _CANCEL, _CREDIT, _SHUTDOWN = map(Atom, ("call", "cancel", "credit", "shutdown"))
_TIMEOUT_MS, _META, _CREDIT_KEY = map(Atom, ("timeout_ms", "meta", "credit"))
# Request codecs by name, filled as requests name them.
_CODECS: dict[str, Any] = {}
# A Stream's producer may run this many chunks ahead of what gRPC has sent.
STREAM_WINDOW = 256
# A Session or Stream reply batches what is ready, up to about this many bytes.
BATCH_BYTES = 1 << 20


class SyncThreads:
    """Plain threads running the dispatcher's sync calls that no RPC thread runs itself."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        run_sync = dispatcher.run_sync
        for i in range(dispatcher.threads):
            threading.Thread(target=self._run, args=(run_sync,), name=f"snakepit-sync-{i}",
                             daemon=True).start()  # fmt: skip

    def put(self, ctx: Any) -> None:
        self._queue.put(ctx)

    def _run(self, run_sync: Callable[[Any], None]) -> None:
        get = self._queue.get
        while True:
            run_sync(get())


def _runner(dispatcher: Dispatcher, pool: SyncThreads) -> Callable[[Any], None]:
    """Run one sync call on this (RPC) thread and pass the calls queued behind it to the pool.

    A unary Call answers only when its handler returns, so its thread must not
    go on to run other RPCs' queued calls the way ``run_sync`` does.
    """
    run_one = dispatcher.run_one

    def run(ctx: Any) -> None:
        nxt = run_one(ctx)
        if nxt is not None:
            pool.put(nxt)

    return run


class WorkerService:
    """Handlers of the Worker service (sync gRPC server, one thread per RPC)."""

    def __init__(self, dispatcher: Dispatcher, router: Router, pool: SyncThreads, codec: Any,
                 max_frame: int, on_shutdown: Callable[[float], None]) -> None:  # fmt: skip
        self.dispatcher = dispatcher
        self.router = router
        self.pool = pool
        self.codec = codec
        self.max_frame = max_frame
        self.on_shutdown = on_shutdown
        self._run_inline = _runner(dispatcher, pool)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Session": grpc.stream_stream_rpc_method_handler(
                self.Session, _parser("Frames"), _serialize),
            "Call": grpc.unary_unary_rpc_method_handler(
                self.Call, _parser("CallRequest"), _serialize),
            "Stream": grpc.unary_stream_rpc_method_handler(
                self.Stream, _parser("CallRequest"), _serialize),
            "Describe": grpc.unary_unary_rpc_method_handler(
                self.Describe, _parser("InfoRequest"), _serialize),
            "Health": grpc.unary_unary_rpc_method_handler(
                self.Health, _parser("InfoRequest"), _serialize),
        })  # fmt: skip

    # --- Session --------------------------------------------------------------------------

    def Session(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        session = SessionRoute(self.codec)
        router = self.router
        router.sessions.append(session)
        context.add_callback(session.close)  # the client went away: end our output
        router.set_origin(session)
        try:
            self.dispatcher.send_ready()  # first, before anything the input can cause
        finally:
            router.set_origin(None)
        threading.Thread(target=self._session_input, args=(session, requests),
                         name="snakepit-grpc-session", daemon=True).start()  # fmt: skip
        return self._session_output(session)

    def _session_output(self, session: SessionRoute) -> Iterator[Any]:
        out = session.out
        Frames = pb.Frames
        while True:
            frame = out.get()
            if frame is None:
                return
            batch, size = [frame], len(frame)
            while size < BATCH_BYTES:
                try:
                    frame = out.get_nowait()
                except queue.Empty:
                    break
                if frame is None:
                    yield Frames(frames=batch)
                    return
                batch.append(frame)
                size += len(frame)
            yield Frames(frames=batch)

    def _session_input(self, session: SessionRoute, requests: Iterator[Any]) -> None:
        decode, limit = self.codec.decode, self.max_frame
        try:
            for message in requests:
                for frame in message.frames:
                    if len(frame) > limit:
                        why = f"frame of {len(frame)} bytes is over the limit of {limit}"
                        self._session_bad(session, frame, why)
                        continue
                    try:
                        term = decode(frame)
                    except DecodeError as exc:
                        self._session_bad(session, frame, f"undecodable frame: {exc}")
                        continue
                    self._session_message(session, term)
        except grpc.RpcError:
            pass  # the client went away
        except Exception:  # never let a broken stream kill the thread silently
            import traceback

            traceback.print_exc()
        finally:
            self._end_session(session)

    def _session_bad(self, session: SessionRoute, frame: bytes, message: str) -> None:
        ext = self.codec.peek_call_id(frame)
        self._session_error(session, ext, message)

    def _session_error(self, session: SessionRoute, ext: Any, message: str) -> None:
        """Answer ``:bad_request`` on this session, naming the id the session used."""
        router = self.router
        iid: int | None
        if ext is not None and ext in session.calls:
            iid = session.calls[ext]  # in flight: reported out of band, never a second terminal
        else:
            iid = router.register(session, ext) if ext is not None else None
        router.set_origin(session)
        try:
            self.dispatcher.bad_request(iid, message)
        finally:
            router.set_origin(None)

    def _session_message(self, session: SessionRoute, msg: Any) -> None:
        router, temp = self.router, None
        if type(msg) is tuple and len(msg) >= 2 and type(msg[0]) is Atom:
            tag, ext = msg[0], msg[1]
            if tag == "beam_functions" or tag == "beam_reply":  # (1.1) refs are not call ids
                if tag == "beam_functions":
                    router.beam_session = session
                router.set_origin(session)
                try:
                    self.dispatcher.handle(msg)
                finally:
                    router.set_origin(None)
                return
            if tag == "cancel" or tag == "credit":
                msg = (tag, session.calls.get(ext, -1), *msg[2:])
            elif tag == "shutdown":
                if len(msg) == 2 and type(ext) in (int, float) and ext >= 0:
                    self.on_shutdown(ext)
                    return
            elif type(ext) is int and ext >= 0:
                if tag == "call" and ext in session.calls:
                    self._session_error(session, ext, f"call id {ext} is already in flight")
                    return
                iid = router.register(session, ext)
                if tag == "call":
                    session.calls[ext] = iid
                else:
                    temp = iid
                msg = (tag, iid, *msg[2:])
        router.set_origin(session)
        try:
            ctx = self.dispatcher.handle(msg)
        finally:
            router.set_origin(None)
        if temp is not None:
            router.forget(temp)
        if ctx is not None:
            self.pool.put(ctx)

    def _end_session(self, session: SessionRoute) -> None:
        """End of the session's input: cancel its calls, let their terminals out, end the output."""
        handle = self.dispatcher.handle
        for iid in list(session.calls.values()):
            handle((_CANCEL, iid))
        end = time.monotonic() + 0.5
        while session.calls and time.monotonic() < end:
            time.sleep(0.01)
        try:
            self.router.sessions.remove(session)
        except ValueError:
            pass
        if self.router.beam_session is session:  # (1.1) its BEAM functions go with it
            self.router.beam_session = None
            beam = self.dispatcher.beam_calls(False)
            if beam is not None:
                beam.withdraw("the gRPC session serving BEAM functions ended")
        session.close()

    # --- Call and Stream ------------------------------------------------------------------

    def _start(self, request: Any, context: grpc.ServicerContext, dest: Any,
               credit: int | None) -> tuple[int, Any, Any]:  # fmt: skip
        """Decode a CallRequest, register ``dest`` and hand the call to the dispatcher.

        Returns:
            (internal id, the request's codec, a sync call to run now or None).
        """
        codec = _CODECS.get(request.codec)
        if codec is None:
            try:
                codec = _CODECS[request.codec] = request_codec(request.codec)
            except ValueError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        decode, opts = codec.decode, {}
        try:
            args = decode(request.args) if request.args else []
            kwargs = decode(request.kwargs) if request.kwargs else {}
            if request.meta:
                opts[_META] = decode(request.meta)
        except DecodeError as exc:
            self._abort(context, codec, {"kind": "bad_request", "type": "BadRequest",
                                         "message": f"undecodable arguments: {exc}"})  # fmt: skip
        timeout_ms = request.timeout_ms
        left = context.time_remaining()
        if left is not None and left < 1e9:  # the RPC has a gRPC deadline
            grpc_ms = max(1, int(left * 1000))
            timeout_ms = min(timeout_ms, grpc_ms) if timeout_ms else grpc_ms
        if timeout_ms:
            opts[_TIMEOUT_MS] = timeout_ms
        if credit is not None:
            opts[_CREDIT_KEY] = credit
            dest.encode = codec.encode
        iid = self.router.register(dest)
        handle = self.dispatcher.handle
        # A client that cancels (or disconnects) cancels the call, like {:cancel, id}.
        live = context.add_callback(lambda: dest.finished or handle((_CANCEL, iid)))  # type: ignore[arg-type]  # (its value is dropped)
        ctx = handle((_CALL, iid, request.method, args, kwargs, opts))
        if not live:  # the RPC ended before the callback was in place
            handle((_CANCEL, iid))
        return iid, codec, ctx

    def Call(self, request: Any, context: grpc.ServicerContext) -> Any:
        route = CallRoute()
        _, codec, ctx = self._start(request, context, route, None)
        if ctx is not None:
            self._run_inline(ctx)
        term: Any = route.wait()  # (never None: it waits without a timeout)
        if term[0] is OK:
            try:
                return pb.CallReply(result=codec.encode(term[2]))
            except EncodeError as exc:
                self._abort(context, codec, unencodable(exc, "result"))
        self._abort(context, codec, term[2])

    def Stream(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        route = StreamRoute(self.codec)
        iid, codec, ctx = self._start(request, context, route, STREAM_WINDOW)
        if ctx is not None:
            self.pool.put(ctx)
        return self._stream_replies(route, iid, codec, context)

    def _stream_replies(self, route: StreamRoute, iid: int, codec: Any,
                        context: grpc.ServicerContext) -> Iterator[Any]:  # fmt: skip
        items, handle, Reply = route.items, self.dispatcher.handle, pb.StreamReply
        seq = 0
        while True:
            item = items.get()
            batch, size = [], 0
            while type(item) is bytes:
                batch.append(item)
                size += len(item)
                if size >= BATCH_BYTES:
                    item = None
                    break
                try:
                    item = items.get_nowait()
                except queue.Empty:
                    item = None
                    break
            if item is None:
                yield Reply(chunks=batch, seq=seq)
                seq += len(batch)
                handle((_CREDIT, iid, len(batch)))
                continue
            if item[0] is OK:
                try:
                    result = codec.encode(item[2])
                except EncodeError as exc:
                    if batch:
                        yield Reply(chunks=batch, seq=seq)
                    self._abort(context, codec, unencodable(exc, "result"))
                yield Reply(chunks=batch, seq=seq, done=True, result=result)
                return
            if batch:
                yield Reply(chunks=batch, seq=seq)
            self._abort(context, codec, item[2])

    @staticmethod
    def _abort(context: grpc.ServicerContext, codec: Any, error: dict) -> None:
        error = {str(k): v for k, v in error.items()}
        detail = error_to_proto(error, codec, pb)
        context.set_trailing_metadata(((ERROR_KEY, detail.SerializeToString()),))
        code = STATUS.get(str(error.get("kind")), grpc.StatusCode.UNKNOWN)
        context.abort(code, f"{error.get('kind')}: {error.get('type')}: {error.get('message')}")

    # --- Describe and Health --------------------------------------------------------------

    def _info(self, request: Any, context: grpc.ServicerContext, data: dict) -> Any:
        try:
            codec = request_codec(request.codec)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.InfoReply(data=codec.encode(data))

    def Describe(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._info(request, context, self.dispatcher.describe())

    def Health(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._info(request, context, self.dispatcher.health_report())
