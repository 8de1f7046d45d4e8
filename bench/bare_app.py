"""The baseline for figure 1c: a bare aiohttp handler answering ``POST /v1/sources`` with a
constant body of the gateway's shape, no authentication, no signing, no middleware.

    python bench/bare_app.py --port 9001
"""

from __future__ import annotations

import argparse

from aiohttp import web

URL = "http://127.0.0.1/v1/sources/00000000-0000-4000-8000-000000000000?token=" + "x" * 120
SOURCE = {
    "upload_url": URL,
    "download_url": URL,
    "id": "00000000-0000-4000-8000-000000000000",
    "expires_at": "2026-11-23T06:30:00Z",
}


async def create(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({**SOURCE, "source": SOURCE}, status=201)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/sources", create)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
