"""daprd's workflow HTTP API (`/v1.0-beta1/workflows/...`), served on the engine's asyncio loop.

A small HTTP/1.1 server on asyncio streams: keep-alive, Content-Length and chunked bodies,
`Expect: 100-continue`, bodies capped at the engine's --max-body-size as daprd caps them (a
route that reads a longer body answers 400 ERR_BODY_READ). Every handler calls `WorkflowApi`, the
one place that validates requests and maps errors (dapr_api), and answers daprd's JSON error
bodies.
The routes exist under `/v1.0-alpha1/`, `/v1.0-beta1/` and `/v1.0/`, as in daprd:

    POST workflows/<component>/<workflowName>/start[?instanceID=<id>]   body = input   -> 202
    GET  workflows/<component>/<instanceID>                                            -> 200
    POST workflows/<component>/<instanceID>/terminate|pause|resume|purge               -> 202
    POST workflows/<component>/<instanceID>/raiseEvent/<eventName>      body = data    -> 202
    GET  /v1.0/healthz, /v1.0/healthz/outbound                                         -> 204

With an api token, every request needs the `dapr-api-token` header (else 401), except the two
health checks, which daprd leaves open for probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import posixpath
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import parse_qs, unquote_to_bytes

from google.protobuf import json_format

from devengine.dapr_api import DaprApiError, WorkflowApi, instance_not_found
from devengine.engine import DEFAULT_MAX_BODY_SIZE

log = logging.getLogger("devengine.http")

MAX_LINE_BYTES = 16 * 1024  # request line, each header line
MAX_HEADER_BYTES = 64 * 1024  # all header lines together
MAX_HEADERS = 100
HEADER_TIMEOUT = 10.0  # daprd's ReadHeaderTimeout
BODY_TIMEOUT = 60.0
IDLE_TIMEOUT = 120.0  # a kept-alive connection with no next request
LINGER_SECONDS = 2.0  # reading what a client still sends after an error that closes
LINGER_MAX_BYTES = 8 * 1024 * 1024

API_VERSIONS = ("v1.0", "v1.0-beta1", "v1.0-alpha1")
INSTANCE_ACTIONS = ("terminate", "pause", "resume", "purge")
_HTTP_VERSION = re.compile(r"^HTTP/1\.[01]$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 tchar: methods, header names
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class HttpError(Exception):
    """A request answered with an error before (or instead of) reaching the workflow API."""

    def __init__(self, status: int, error_code: str, message: str, close: bool = False):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.close = close
        self.cut_short = False  # the client ended the connection mid-request


def _malformed(message: str) -> HttpError:
    return HttpError(400, "ERR_MALFORMED_REQUEST", message, close=True)


def _cut_short(message: str) -> HttpError:
    error = _malformed(message)
    error.cut_short = True
    return error


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Longer than the limit: left unread (or read in part), for the route to refuse.
    body_too_large: bool = False

    @property
    def keep_alive(self) -> bool:
        connection = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def json(status: int, payload: object) -> Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return Response(status, body, "application/json")


def error_response(status: int, error_code: str, message: str) -> Response:
    return Response.json(status, {"errorCode": error_code, "message": message})


async def _read_line(reader: asyncio.StreamReader, limit: int) -> bytes:
    """One CRLF- (or LF-) terminated line, without its terminator; 431/400 when too long."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(
            431, "ERR_MALFORMED_REQUEST", "request header line too long", close=True
        ) from None
    if len(line) > limit:
        raise HttpError(431, "ERR_MALFORMED_REQUEST", "request header line too long", close=True)
    return line.rstrip(b"\r\n") if line.endswith(b"\r\n") else line[:-1]


async def read_head(reader: asyncio.StreamReader) -> Request | None:
    """The request line and headers; None on a clean end of the connection before a request."""
    try:
        line = await _read_line(reader, MAX_LINE_BYTES)
        # RFC 9112: a server should ignore at least one empty line before the request line.
        if not line:
            line = await _read_line(reader, MAX_LINE_BYTES)
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise _cut_short("incomplete request line") from None
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise _malformed("malformed request line") from None
    parts = text.split(" ")
    if len(parts) != 3 or not all(parts) or not _TOKEN.match(parts[0]):
        raise _malformed("malformed request line")
    method, target, version = parts
    if not _HTTP_VERSION.match(version):
        if version.startswith("HTTP/"):
            raise HttpError(505, "ERR_MALFORMED_REQUEST", "HTTP version not supported", True)
        raise _malformed("malformed request line")
    request = Request(method, target, version)
    total = 0
    while True:
        try:
            raw = await _read_line(reader, MAX_LINE_BYTES)
        except asyncio.IncompleteReadError:
            raise _cut_short("incomplete request headers") from None
        if not raw:
            break
        total += len(raw)
        if total > MAX_HEADER_BYTES or len(request.headers) >= MAX_HEADERS:
            raise HttpError(431, "ERR_MALFORMED_REQUEST", "request headers too large", True)
        name, sep, value = raw.partition(b":")
        try:
            key = name.decode("ascii")
            text_value = value.decode("latin-1").strip(" \t")
        except UnicodeDecodeError:
            raise _malformed("malformed request header") from None
        if not sep or not _TOKEN.match(key):
            raise _malformed("malformed request header")
        key = key.lower()
        if key in request.headers:
            if key in ("content-length", "host", "transfer-encoding"):
                if key == "content-length" and request.headers[key] == text_value:
                    continue
                raise _malformed(f"repeated {key} header")
            request.headers[key] = f"{request.headers[key]}, {text_value}"
        else:
            request.headers[key] = text_value
    if request.version == "HTTP/1.1" and "host" not in request.headers:
        raise _malformed("missing required Host header")
    return request


async def read_body(
    request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int
) -> bytes:
    """The body by Content-Length or chunked transfer coding; none at all, and the request
    marked, when it is longer than `limit` bytes (0 or less: no limit)."""
    transfer = request.headers.get("transfer-encoding")
    length_header = request.headers.get("content-length")
    if transfer is not None and length_header is not None:
        raise _malformed("both Transfer-Encoding and Content-Length")
    if transfer is not None:
        if transfer.strip().lower() != "chunked":
            raise HttpError(501, "ERR_MALFORMED_REQUEST", "unsupported transfer coding", True)
        await _continue(request, writer)
        body = await _read_chunked(reader, limit)
        if body is None:
            request.body_too_large = True
            return b""
        return body
    if length_header is None:
        return b""
    if not length_header.isdigit() or not length_header.isascii():
        raise _malformed("invalid Content-Length")
    length = int(length_header)
    if 0 < limit < length:
        # daprd reads such a body up to its limit and the route then fails: the route decides.
        request.body_too_large = True
        return b""
    if length == 0:
        return b""
    await _continue(request, writer)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise _cut_short("incomplete request body") from None


def body_too_large() -> Response:
    """daprd's answer when a route reads a body longer than --max-body-size: its body-read
    error wrapping the size limiter's ("stream too large")."""
    return error_response(400, "ERR_BODY_READ", "failed to read request body: stream too large")


async def _continue(request: Request, writer: asyncio.StreamWriter) -> None:
    if request.version == "HTTP/1.1" and request.headers.get("expect", "").lower() == (
        "100-continue"
    ):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """The chunks' data; None as soon as it grows past `limit` (0 or less: no limit)."""
    body = bytearray()
    try:
        while True:
            size_line = await _read_line(reader, MAX_LINE_BYTES)
            size_text = size_line.split(b";", 1)[0].strip()
            if not size_text or not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
                raise _malformed("invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                while await _read_line(reader, MAX_LINE_BYTES):  # trailers, ignored
                    pass
                return bytes(body)
            if 0 < limit < len(body) + size:
                return None
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise _malformed("invalid chunk terminator")
    except asyncio.IncompleteReadError:
        raise _cut_short("incomplete chunked body") from None


def encode_response(response: Response, keep_alive: bool, head_only: bool = False) -> bytes:
    reason = HTTPStatus(response.status).phrase
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Date: {formatdate(usegmt=True)}"]
    if response.content_type:
        lines.append(f"Content-Type: {response.content_type}")
    for name, value in response.headers.items():
        lines.append(f"{name}: {value}")
    if response.status != 204:
        lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if head_only or response.status == 204:
        return head
    return head + response.body


# -- routing -------------------------------------------------------------------------------------

Handler = Callable[[Request, list[str], dict[str, list[str]]], Awaitable[Response]]


def split_target(target: str) -> tuple[list[str], dict[str, list[str]]]:
    """Path segments (cleaned and unescaped like daprd's router) and query parameters."""
    if target.startswith(("http://", "https://")):  # absolute-form
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    if not target.startswith("/"):
        raise _malformed("malformed request target")
    raw_path, _, query = target.partition("?")
    raw_path = raw_path.partition("#")[0]
    if _BAD_ESCAPE.search(raw_path):
        raise _malformed("invalid URL escape")
    # daprd's CleanPath (path.Clean on the escaped path) and StripSlashes.
    cleaned = posixpath.normpath(raw_path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    segments = []
    for segment in cleaned.strip("/").split("/"):
        if not segment:
            continue
        # Route parameters go through url.QueryUnescape in daprd: '+' reads as a space.
        value = unquote_to_bytes(segment.replace("+", " "))
        try:
            segments.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise _malformed("invalid URL escape") from None
    return segments, parse_qs(query, keep_blank_values=True, errors="replace")


class HttpApi:
    """Routes requests to WorkflowApi; one instance serves every connection."""

    def __init__(
        self,
        api: WorkflowApi,
        api_token: str | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ):
        self.api = api
        self.api_token = api_token.encode() if api_token else None
        self.max_body_size = max_body_size
        self.connections: set[asyncio.Task] = set()

    # -- the routes ------------------------------------------------------------------------

    def route(self, segments: list[str]) -> tuple[dict[str, Handler], bool] | None:
        """The handlers by method for a path, and whether the path is a health check."""
        if len(segments) < 2 or segments[0] not in API_VERSIONS:
            return None
        version, rest = segments[0], segments[1:]
        if version == "v1.0" and rest in (["healthz"], ["healthz", "outbound"]):
            return {"GET": self.healthz}, True
        if rest[0] != "workflows":
            return None
        if len(rest) == 3:
            return {"GET": self.get_workflow}, False
        if len(rest) == 4 and rest[3] == "start":
            return {"POST": self.start_workflow}, False
        if len(rest) == 4 and rest[3] in INSTANCE_ACTIONS:
            return {"POST": self.instance_action}, False
        if len(rest) == 5 and rest[3] == "raiseEvent":
            return {"POST": self.raise_event}, False
        return None

    async def healthz(self, request: Request, segments, params) -> Response:
        return Response(204)

    async def start_workflow(self, request: Request, segments, params) -> Response:
        _, _, _component, workflow_name, _ = segments
        instance_id = params.get("instanceID", [""])[0]
        trace = self.api.engine.tracing.incoming(
            request.headers.get("traceparent"), request.headers.get("tracestate")
        )
        new_id = await self.api.start(instance_id, workflow_name, request.body, {}, trace)
        return Response.json(202, {"instanceID": new_id})

    async def get_workflow(self, request: Request, segments, params) -> Response:
        instance_id = segments[3]
        response, exists = self.api.get(instance_id)
        if not exists:
            # daprd's HTTP handler turns the gRPC API's empty answer into a 404.
            raise instance_not_found(instance_id)
        payload = json_format.MessageToDict(response)
        return Response.json(200, payload)

    async def instance_action(self, request: Request, segments, params) -> Response:
        instance_id, action = segments[3], segments[4]
        operation = {
            "terminate": self.api.terminate,
            "pause": self.api.pause,
            "resume": self.api.resume,
            "purge": self.api.purge,
        }[action]
        await operation(instance_id)
        return Response(202)

    async def raise_event(self, request: Request, segments, params) -> Response:
        instance_id, event_name = segments[3], segments[5]
        await self.api.raise_event(instance_id, event_name, request.body)
        return Response(202)

    # -- the connection loop ---------------------------------------------------------------

    def authorized(self, request: Request, health_check: bool) -> bool:
        if self.api_token is None or (health_check and request.method == "GET"):
            return True
        supplied = request.headers.get("dapr-api-token")
        return supplied is not None and hmac.compare_digest(
            supplied.encode("latin-1"), self.api_token
        )

    async def dispatch(self, request: Request) -> Response:
        segments, params = split_target(request.target)
        found = self.route(segments)
        if not self.authorized(request, found is not None and found[1]):
            return Response(401, b"invalid api token\n", "text/plain; charset=utf-8")
        if found is None:
            path = "/" + "/".join(segments)
            return error_response(404, "ERR_NOT_FOUND", f'method "{path}" is not found')
        handlers, health_check = found
        handler = handlers.get(request.method)
        if handler is None:
            allowed = ", ".join(handlers)
            response = error_response(
                405,
                "ERR_METHOD_NOT_ALLOWED",
                f"method {request.method} is not allowed here; allowed: {allowed}",
            )
            response.headers["Allow"] = allowed
            return response
        if request.body_too_large and not health_check:
            # Every workflow route reads the body before anything else, as daprd's do.
            return body_too_large()
        try:
            return await handler(request, segments, params)
        except DaprApiError as e:
            return Response.json(e.http_status, e.json())

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # The connection runs in a task of its own that stop_http_server may cancel. (Cancelling
        # the task asyncio.start_server made would make Python 3.11's stream callback log the
        # CancelledError as an error.)
        task = asyncio.create_task(self._connection(reader, writer))
        self.connections.add(task)
        try:
            await asyncio.wait({task})
        finally:
            self.connections.discard(task)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or stalled: nothing to answer
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            try:
                # A new connection must send its request promptly; a kept-alive one may idle.
                async with asyncio.timeout(HEADER_TIMEOUT if first else IDLE_TIMEOUT):
                    request = await read_head(reader)
                if request is None:
                    return
                async with asyncio.timeout(BODY_TIMEOUT):
                    request.body = await read_body(request, reader, writer, self.max_body_size)
            except HttpError as e:
                if e.cut_short:
                    return  # the client ended the connection mid-request: nobody to answer
                response = error_response(e.status, e.error_code, e.message)
                writer.write(encode_response(response, keep_alive=False))
                await writer.drain()
                await _linger(reader, writer)
                return
            first = False
            # A body left unread leaves the connection unusable for another request.
            keep_alive = request.keep_alive and not request.body_too_large
            try:
                response = await self.dispatch(request)
            except HttpError as e:
                response = error_response(e.status, e.error_code, e.message)
                keep_alive = keep_alive and not e.close
            except Exception:
                log.exception("HTTP %s %s failed", request.method, request.target)
                response = error_response(500, "ERR_INTERNAL", "internal error")
            writer.write(encode_response(response, keep_alive, head_only=request.method == "HEAD"))
            await writer.drain()
            if request.body_too_large:
                await _linger(reader, writer)
            if not keep_alive:
                return


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads and drops what the client is still sending before closing, for a short while.

    Closing a socket with unread input makes the kernel reset the connection, and the client may
    then lose the error response (one answered before a large body was sent, say).
    """
    dropped = 0
    with contextlib.suppress(TimeoutError, OSError):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_SECONDS):
            while dropped < LINGER_MAX_BYTES:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                dropped += len(chunk)


async def start_http_server(
    api: WorkflowApi,
    host: str,
    port: int,
    api_token: str | None = None,
    start_serving: bool = True,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> tuple[asyncio.Server, HttpApi]:
    http_api = HttpApi(api, api_token, max_body_size)
    server = await asyncio.start_server(
        http_api.handle_connection,
        host,
        port,
        limit=MAX_LINE_BYTES * 2,
        start_serving=start_serving,
    )
    return server, http_api


async def stop_http_server(server: asyncio.Server, http_api: HttpApi) -> None:
    """Stops listening, then ends the open connections (idle keep-alive ones would wait forever)."""
    server.close()
    for task in list(http_api.connections):
        task.cancel()
    if http_api.connections:
        await asyncio.wait(list(http_api.connections), timeout=2)
    with contextlib.suppress(Exception):
        await server.wait_closed()
