"""A minimal S3-compatible sink: the ceiling against which the gateway's own cost shows.

It speaks just enough of S3's REST API (path-style) for the gateway and aiobotocore:
PutObject (plain or presigned), the multipart calls, object tagging, HeadObject, HeadBucket and
GetObject with a Range. Uploaded bytes are read and thrown away; only each object's size (and its
tags) are kept. GET serves that many bytes generated from a fixed random block, so a download costs
the sink almost nothing. Signatures are not checked.

    python bench/s3sink.py --port 9000
"""

from __future__ import annotations

import argparse
import os
import re
import uuid
from dataclasses import dataclass, field

from aiohttp import web

BLOCK = os.urandom(1024 * 1024)
# How much request body the sink asks the socket for at once.
READ_SIZE = 1024 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class Sink:
    objects: dict[str, int] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    uploads: dict[str, dict[int, int]] = field(default_factory=dict)
    received: int = 0


SINK = web.AppKey("sink", Sink)


def _xml(body: str, status: int = 200) -> web.Response:
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'
    return web.Response(status=status, text=text, content_type="application/xml")


def _etag(key: str, size: int) -> str:
    return f'"{uuid.uuid5(uuid.NAMESPACE_URL, f"{key}:{size}").hex}"'


async def _drain(request: web.Request) -> int:
    size = 0
    while chunk := await request.content.read(READ_SIZE):
        size += len(chunk)
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
        body = await request.text()
        found = re.search(r"<Value>([^<]*)</Value>", body)
        sink.tags[key] = found.group(1) if found else ""
        return web.Response(status=200)
    if method == "GET" and "tagging" in query:
        tags = ""
        if key in sink.tags:
            tags = f"<Tag><Key>sha256</Key><Value>{sink.tags[key]}</Value></Tag>"
        return _xml(f"<Tagging><TagSet>{tags}</TagSet></Tagging>")
    if method == "POST" and "uploads" in query:
        upload_id = uuid.uuid4().hex
        sink.uploads[upload_id] = {}
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
        done = sink.uploads.pop(query["uploadId"], None)
        if done is None:
            return _xml("<Error><Code>NoSuchUpload</Code></Error>", 404)
        sink.objects[key] = sum(done.values())
        etag = _etag(key, sink.objects[key])
        return _xml(
            "<CompleteMultipartUploadResult>"
            f"<Bucket>{bucket}</Bucket><Key>{key}</Key><ETag>{etag}</ETag>"
            "</CompleteMultipartUploadResult>"
        )
    if method == "DELETE" and "uploadId" in query:
        sink.uploads.pop(query["uploadId"], None)
        return web.Response(status=204)
    if method == "PUT":
        size = await _drain(request)
        sink.objects[key] = size
        return web.Response(status=200, headers={"ETag": _etag(key, size)})
    if method == "DELETE":
        sink.objects.pop(key, None)
        return web.Response(status=204)
    if method in ("GET", "HEAD"):
        return await _serve(request, key)
    return _xml("<Error><Code>NotImplemented</Code></Error>", 501)


async def _serve(request: web.Request, key: str) -> web.StreamResponse:
    size = request.app[SINK].objects.get(key)
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
        "ETag": _etag(key, size),
        "Last-Modified": "Mon, 02 Nov 2026 00:00:00 GMT",
        "Content-Type": "application/gzip",
        "Accept-Ranges": "bytes",
    }
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = max(0, end - start + 1)
    await response.prepare(request)
    if request.method == "GET":
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
