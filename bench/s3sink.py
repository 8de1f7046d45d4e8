"""A minimal S3-compatible sink: the ceiling against which the gateway's own cost shows.

It speaks just enough of S3's REST API (path-style) for the gateway and aiobotocore:
PutObject (plain or presigned), the multipart calls, object tagging, HeadObject, HeadBucket and
GetObject with a Range. Uploaded bytes are read and thrown away; only each object's size (and its
tags) are kept, except for small objects (resumable uploads' states and slots), kept whole. GET
serves those as they are and the others as that many bytes generated from a fixed random block, so
a download costs the sink almost nothing. Conditional writes (``If-None-Match: *``, ``If-Match``
on PutObject, CompleteMultipartUpload and DeleteObject) are honoured, as resumable uploads need;
every write gets a new ETag. Signatures are not checked.

    python bench/s3sink.py --port 9000
"""

from __future__ import annotations

import argparse
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

BLOCK = os.urandom(1024 * 1024)
# How much request body the sink asks the socket for at once.
READ_SIZE = 1024 * 1024
# Objects up to this size are kept whole (JSON states); larger ones only by size.
KEEP_SIZE = 64 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class Sink:
    objects: dict[str, int] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # the TagSet's XML
    uploads: dict[str, dict[int, int]] = field(default_factory=dict)
    upload_tags: dict[str, str] = field(default_factory=dict)
    received: int = 0
    small: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    writes: int = 0

    def store(self, key: str, size: int, body: bytes | None = None, tags: str = "") -> str:
        self.writes += 1
        self.objects[key] = size
        self.etags[key] = f'"{uuid.uuid5(uuid.NAMESPACE_URL, f"{key}:{self.writes}").hex}"'
        self.tags[key] = tags
        if body is not None:
            self.small[key] = body
        else:
            self.small.pop(key, None)
        return self.etags[key]

    def refused(self, key: str, headers: Mapping[str, str]) -> bool:
        """Whether a conditional write's condition fails."""
        if headers.get("If-None-Match") == "*" and key in self.objects:
            return True
        wanted = headers.get("If-Match")
        return wanted is not None and self.etags.get(key, "").strip('"') != wanted.strip('"')


def _tag_xml(header: str) -> str:
    """``k=v&k2=v2`` (x-amz-tagging) as TagSet XML."""
    pairs = [p.split("=", 1) for p in header.split("&") if "=" in p]
    return "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in pairs)


def _precondition_failed() -> web.Response:
    return _xml("<Error><Code>PreconditionFailed</Code><Message>no</Message></Error>", 412)


SINK = web.AppKey("sink", Sink)


def _xml(body: str, status: int = 200) -> web.Response:
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'
    return web.Response(status=status, text=text, content_type="application/xml")


def _etag(key: str, size: int) -> str:
    return f'"{uuid.uuid5(uuid.NAMESPACE_URL, f"{key}:{size}").hex}"'


async def _drain(request: web.Request, keep: list[bytes] | None = None) -> int:
    size = 0
    while chunk := await request.content.read(READ_SIZE):
        size += len(chunk)
        if keep is not None and size <= KEEP_SIZE:
            keep.append(chunk)
    request.app[SINK].received += size
    return size


def _no_such_key() -> web.Response:
    return _xml("<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>", 404)


async def handle(request: web.Request) -> web.StreamResponse:
    sink = request.app[SINK]
    bucket, _, key = request.match_info["path"].partition("/")
    query = request.query
    method = request.method
    if not key:  # bucket-level calls: HeadBucket, lifecycle, create
        if method == "GET" and "lifecycle" in query:
            return _xml("<Error><Code>NoSuchLifecycleConfiguration</Code></Error>", 404)
        await _drain(request)
        return web.Response(status=200)
    if method == "PUT" and "tagging" in query:
        found = re.search(r"<TagSet>(.*)</TagSet>", await request.text(), re.S)
        sink.tags[key] = found.group(1) if found else ""
        return web.Response(status=200)
    if method == "GET" and "tagging" in query:
        return _xml(f"<Tagging><TagSet>{sink.tags.get(key, '')}</TagSet></Tagging>")
    if method == "POST" and "uploads" in query:
        upload_id = uuid.uuid4().hex
        sink.uploads[upload_id] = {}
        sink.upload_tags[upload_id] = _tag_xml(request.headers.get("x-amz-tagging", ""))
        return _xml(
            "<InitiateMultipartUploadResult>"
            f"<Bucket>{bucket}</Bucket><Key>{key}</Key><UploadId>{upload_id}</UploadId>"
            "</InitiateMultipartUploadResult>"
        )
    if method == "PUT" and "partNumber" in query:
        parts = sink.uploads.get(query.get("uploadId", ""))
        size = await _drain(request)
        if parts is None:
            return _xml("<Error><Code>NoSuchUpload</Code></Error>", 404)
        parts[int(query["partNumber"])] = size
        return web.Response(status=200, headers={"ETag": _etag(key, size)})
    if method == "POST" and "uploadId" in query:
        await _drain(request)
        if sink.refused(key, request.headers):
            return _precondition_failed()
        done = sink.uploads.pop(query["uploadId"], None)
        if done is None:
            return _xml("<Error><Code>NoSuchUpload</Code></Error>", 404)
        tags = sink.upload_tags.pop(query["uploadId"], "")
        etag = sink.store(key, sum(done.values()), tags=tags)
        return _xml(
            "<CompleteMultipartUploadResult>"
            f"<Bucket>{bucket}</Bucket><Key>{key}</Key><ETag>{etag}</ETag>"
            "</CompleteMultipartUploadResult>"
        )
    if method == "DELETE" and "uploadId" in query:
        sink.uploads.pop(query["uploadId"], None)
        return web.Response(status=204)
    if method == "PUT":
        kept: list[bytes] = []
        size = await _drain(request, kept)
        if sink.refused(key, request.headers):
            return _precondition_failed()
        body = b"".join(kept) if size <= KEEP_SIZE else None
        etag = sink.store(key, size, body, _tag_xml(request.headers.get("x-amz-tagging", "")))
        return web.Response(status=200, headers={"ETag": etag})
    if method == "DELETE":
        if "If-Match" in request.headers and sink.refused(key, request.headers):
            return _precondition_failed()
        sink.objects.pop(key, None)
        sink.small.pop(key, None)
        return web.Response(status=204)
    if method in ("GET", "HEAD"):
        return await _serve(request, key)
    return _xml("<Error><Code>NotImplemented</Code></Error>", 501)


async def _serve(request: web.Request, key: str) -> web.StreamResponse:
    sink = request.app[SINK]
    size = sink.objects.get(key)
    if size is None:
        return _no_such_key() if request.method == "GET" else web.Response(status=404)
    start, end, status = 0, size - 1, 200
    found = _RANGE.match(request.headers.get("Range", ""))
    if found and size:
        first, last = found.groups()
        if first:
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
        elif last:
            start = max(0, size - int(last))
        status = 206
    headers = {
        "ETag": sink.etags.get(key, _etag(key, size)),
        "Last-Modified": "Mon, 02 Nov 2026 00:00:00 GMT",
        "Content-Type": "application/gzip",
        "Accept-Ranges": "bytes",
    }
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = max(0, end - start + 1)
    await response.prepare(request)
    if request.method == "GET" and key in sink.small:
        await response.write(sink.small[key][start : end + 1])
    elif request.method == "GET":
        left = end - start + 1
        while left > 0:
            piece = BLOCK if left >= len(BLOCK) else BLOCK[:left]
            await response.write(piece)
            left -= len(piece)
    await response.write_eof()
    return response


def make_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[SINK] = Sink()
    app.router.add_route("*", "/{path:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
