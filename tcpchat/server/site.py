"""
The HTTP side of the port: the browser client, its WebSocket, the HTTPS
fallback and file downloads — all on the TCP protocol's port and TLS (see
``lazytls.SniffingFactory``).

``/``       the page and its modules (``tcpchat/web``), with security headers
``/ws``     the WebSocket transport (``websocket.py``)
``/poll``   the HTTPS fallback transport (``fallback.py``)
``/file/TOKEN/NAME``  a shared file, by a link a logged-in user asked for
            (``file-link``): Range requests, so downloads resume

Every request is bounded like a chat connection: its headers must arrive
within the login timeout (not merely keep trickling), its body is at most
``fallback.MAX_BODY`` bytes, and nothing a peer sends is written to the log.
"""

from __future__ import annotations

import base64
import gzip
import os
from typing import Any, Dict, Optional, Tuple
from urllib.parse import quote

from twisted.web import http
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.static import File, getTypeAndEncoding

from tcpchat.server import fallback

#: the browser client's files (index.html, ES modules, vendored libraries)
WEB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web")
#: what may be served from it: nothing else (no Python files, no caches, no listings)
SERVED = (".html", ".js", ".css", ".txt", "LICENSE")
HEADERS = {
    b"Content-Security-Policy": b"default-src 'self'; connect-src 'self'; img-src 'self' blob: data:; "
                                b"style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"Cache-Control": b"no-cache",
}
#: file types shown in the page (raster images only: an SVG or HTML file could run script on this origin)
INLINE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
#: a shared file is data, never a page: no script, no plugin, not even in a frame
FILE_HEADERS = {
    b"Content-Security-Policy": b"default-src 'none'; sandbox",
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"Cache-Control": b"private, max-age=86400, immutable",
}


class Static(File):
    """The page and its modules, with security headers; anything else under the folder is not found."""

    childNotFound: Any = notFound()

    def directoryListing(self) -> Any:
        return notFound()

    def getChild(self, path: bytes, request: Any) -> Any:
        name = path.decode("utf-8", "replace")
        if name.startswith(".") or name == "__pycache__":
            return self.childNotFound
        child = super().getChild(path, request)
        if isinstance(child, File) and not child.isdir() and not child.basename().endswith(SERVED):
            return self.childNotFound
        return child

    def render(self, request: Any) -> Any:
        for key, value in HEADERS.items():
            request.setHeader(key, value)
        accepted = request.getHeader(b"accept-encoding") or b""
        if request.method in (b"GET", b"HEAD") and b"gzip" in accepted and request.getHeader(b"range") is None \
                and not self.isdir() and self.exists():
            return self._renderCompressed(request)
        return super().render(request)

    #: path -> (modification time, gzip-compressed contents): each file is compressed once, not per request
    _compressed: Dict[str, Tuple[float, bytes]] = {}

    def _renderCompressed(self, request: Any) -> bytes:
        """The page's files are 400 KB, 130 KB compressed: phones on a crowded Wi-Fi get the 130."""
        self.restat(False)
        mtime = self.getModificationTime()
        cached = Static._compressed.get(self.path)
        if cached is None or cached[0] != mtime:
            with open(self.path, "rb") as f:
                cached = Static._compressed[self.path] = (mtime, gzip.compress(f.read(), 9, mtime=0))
        if self.type is None:
            self.type, self.encoding = getTypeAndEncoding(self.basename(), self.contentTypes, self.contentEncodings,
                                                          self.defaultType)
        request.setHeader(b"Content-Type", self.type.encode() if isinstance(self.type, str) else self.type)
        request.setHeader(b"Content-Encoding", b"gzip")
        request.setHeader(b"Vary", b"Accept-Encoding")
        request.setHeader(b"Content-Length", str(len(cached[1])).encode())
        return b"" if request.method == b"HEAD" else cached[1]


class _SharedFile(File):
    """One stored file's contents (``static.File`` does HEAD, Range and 416 for us)."""

    def __init__(self, path: str, record: dict) -> None:
        super().__init__(path)
        mime = str(record.get("mime") or "")
        self.type: Any = mime if mime in INLINE else "application/octet-stream"
        self.encoding: Any = None
        self.record = record

    def render(self, request: Any) -> Any:
        for key, value in FILE_HEADERS.items():
            request.setHeader(key, value)
        record = self.record
        disposition = "inline" if self.type in INLINE else "attachment"
        name = str(record.get("name", "file"))
        ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
        request.setHeader(b"Content-Disposition", f"{disposition}; filename=\"{ascii_name}\"; "
                                                  f"filename*=UTF-8''{_quote(name)}".encode())
        request.setHeader(b"ETag", f'"{record["sha256"]}"'.encode())
        request.setHeader(b"Repr-Digest", b"sha-256=:" + _b64(record["sha256"]) + b":")  # RFC 9530
        ranges = request.getHeader(b"Range")
        if ranges is not None and (b"," in ranges or len(ranges) > 100):
            # several ranges (a multipart answer) are something no download manager needs, and a way to make
            # the server send a file many times over: such a request gets the whole file once (RFC 9110 14.2)
            request.requestHeaders.removeHeader(b"Range")
        return super().render(request)


def _quote(name: str) -> str:
    return quote(name, safe="")


def _b64(sha256_hex: str) -> bytes:
    return base64.b64encode(bytes.fromhex(sha256_hex))


class FileLinks(Resource):
    """``/file/TOKEN/NAME``: a file by a link from ``file-link`` (the name is for the browser only)."""

    isLeaf = True

    def __init__(self, chat: Any) -> None:
        super().__init__()
        self.chat = chat

    def render(self, request: Any) -> Any:
        files = self.chat.files
        if request.method not in (b"GET", b"HEAD") or files is None or not request.postpath:
            return notFound().render(request)
        fid = files.linkedFile(request.postpath[0].decode("ascii", "replace"))
        if fid is None:
            request.setResponseCode(403)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"This download link is not valid (any more): ask for the file again in the chat.\n"
        gone: list = []
        request.notifyFinish().addErrback(gone.append)

        def found(record: Optional[dict]) -> None:
            if gone:
                return
            path = files.objectPath(record["sha256"]) if record is not None else None
            if record is None or path is None or not os.path.exists(path):
                page = notFound().render(request)
                if page is not NOT_DONE_YET:
                    request.write(page)
                    request.finish()
                return
            body = _SharedFile(path, record).render(request)
            if body is not NOT_DONE_YET:
                request.write(body)
                request.finish()

        def failed(failure: Any) -> None:
            if not gone:
                request.setResponseCode(503)
                request.finish()

        self.chat.store.get_file(fid).addCallbacks(found, failed)
        return NOT_DONE_YET


class BoundedRequest(Request):
    """A request whose body may be at most ``fallback.MAX_BODY`` bytes: a longer one is refused (413) unread."""

    maxBody = fallback.MAX_BODY
    _bodySize = 0

    def gotLength(self, length: Optional[int]) -> None:
        if length is not None and length > self.maxBody:
            self._tooLarge()
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._bodySize += len(data)
        if self._bodySize > self.maxBody:  # (a chunked body says no length first)
            self._tooLarge()
            return
        super().handleContentChunk(data)

    def _tooLarge(self) -> None:
        transport = self.channel.transport
        if transport is not None and not getattr(self, "_refused", False):
            self._refused = True
            transport.write(b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            transport.loseConnection()
            self.channel.dataReceived = lambda data: None  # type: ignore[method-assign]


class BoundedChannel(http.HTTPChannel):
    """An HTTP connection whose request headers must all arrive within ``headerTimeout`` of their first byte."""

    headerTimeout = 15.0
    _deadline: Any = None
    _inRequest = False

    def dataReceived(self, data: bytes) -> None:
        if data and not self._inRequest and self._deadline is None:
            self._deadline = self.callLater(self.headerTimeout, self._headersTooSlow)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._inRequest = True
        self._stopDeadline()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        self._inRequest = False
        super().requestDone(request)

    def connectionLost(self, reason: Any = None) -> None:
        self._stopDeadline()
        super().connectionLost(reason)

    def _stopDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _headersTooSlow(self) -> None:
        self._deadline = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()


class ChatSite(Site):
    """The site: no access log (a peer could fill it, and poll ids and download links are secrets)."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def make_site(chat: Any, upgraded: Any = None) -> Site:
    """
    The HTTP side of the port.  ``upgraded(transport)`` is told when a web
    connection becomes a WebSocket (its session then counts it toward the caps).
    """
    from tcpchat.server.websocket import ws_resource

    root = Static(WEB_DIR)
    root.putChild(b"ws", ws_resource(chat, upgraded))
    root.putChild(fallback.PATH, fallback.PollHub(chat))
    root.putChild(b"file", FileLinks(chat))
    site = ChatSite(root, requestFactory=BoundedRequest)
    timeout = chat.limits.login_timeout

    def channel() -> Any:
        inner = BoundedChannel()
        inner.headerTimeout = timeout
        return http._GenericHTTPChannelProtocol(inner)

    site.protocol = channel  # type: ignore[method-assign]
    site.timeOut = timeout  # an HTTP connection idle this long is closed (twisted.web: 12 h)
    return site
