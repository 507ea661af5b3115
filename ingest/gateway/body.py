"""Reading a request body safely: size limits, gzip, JSON array or NDJSON."""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from starlette.requests import Request

from ingest.gateway.problems import Problem

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


async def read_body(request: Request, max_bytes: int, max_decompressed: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise Problem(400, "bad-content-length", "Content-Length is not a number") from None
        if declared_size > max_bytes:
            raise Problem(413, "body-too-large", f"body of {declared_size} bytes > {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Problem(413, "body-too-large", f"body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise Problem(415, "unsupported-encoding", f"Content-Encoding {encoding!r}; use gzip")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, max_decompressed + 1)
    except zlib.error as exc:
        raise Problem(400, "bad-gzip", f"body is not valid gzip: {exc}") from None
    if len(data) > max_decompressed or inflater.unconsumed_tail:
        raise Problem(413, "body-too-large", f"decompressed body exceeds {max_decompressed} bytes")
    if not inflater.eof:
        raise Problem(400, "bad-gzip", "gzip stream is truncated")
    return data


def parse_readings(body: bytes, content_type: str) -> list[Any]:
    media = content_type.split(";")[0].strip().lower()
    if media in JSON_TYPES:
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, "invalid-json", f"body is not valid JSON: {exc}") from None
        if not isinstance(items, list):
            raise Problem(400, "not-an-array", "a JSON body must be an array of readings")
        return items
    if media in NDJSON_TYPES:
        items = []
        for number, line in enumerate(body.split(b"\n"), start=1):
            if line.strip():
                try:
                    items.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise Problem(400, "invalid-json", f"line {number}: {exc}") from None
        return items
    raise Problem(
        415, "unsupported-media-type",
        f"Content-Type {media or '(none)'!r}; use application/json or application/x-ndjson",
    )  # fmt: skip
