"""Reading request bodies: multipart forms and raw images, in memory and within limits.

Uploads are never spooled to disk (Starlette's form parser writes files over 1 MiB to a temporary
file, so the multipart parser here is our own, over python-multipart's streaming parser).
``Content-Length`` is checked before reading, the bytes are counted while reading, and the whole
body must arrive within ``timeout`` seconds, so a client that sends a byte a second cannot hold a
slot for long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from .http_errors import ApiError, human_bytes, one_line

__all__ = ["read_upload", "media_type", "is_image_type", "RAW_TYPES", "MULTIPART_OVERHEAD", "MAX_FIELD_BYTES",
           "MAX_PARTS", "DEFAULT_UPLOAD_TIMEOUT"]

MULTIPART_OVERHEAD = 64 * 1024                 # boundaries, part headers and option fields
MAX_FIELD_BYTES = 4096                         # one option value (a URL may be long)
MAX_PARTS = 32
RAW_TYPES = ("application/octet-stream",)      # accepted besides image/*: "some file", browsers' default
DEFAULT_UPLOAD_TIMEOUT = 60.0                  # seconds for a whole request body


def media_type(header: str) -> tuple[str, dict[str, str]]:
    from python_multipart.multipart import parse_options_header

    mime, params = parse_options_header(header)
    return (mime.decode("latin-1").strip().lower(),
            {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in params.items()})


def is_image_type(mime: str) -> bool:
    return mime.startswith("image/") or mime in RAW_TYPES


class _Multipart:
    """python-multipart callbacks that keep every part in memory, within limits."""

    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.fields: dict[str, str] = {}
        self.file: bytes | None = None
        self.file_type: str | None = None
        self.filename: str | None = None
        self.parts = 0
        self._headers: dict[str, str] = {}
        self._field = b""
        self._value = b""
        self._name = ""
        self._is_file = False
        self._chunks: list[bytes] = []
        self._size = 0

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end}

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise ApiError(400, f"too many multipart parts (at most {MAX_PARTS})")
        self._headers, self._chunks, self._size = {}, [], 0
        self._field = self._value = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1")
        self._field = self._value = b""

    def on_headers_finished(self) -> None:
        disposition, options = media_type(self._headers.get("content-disposition", ""))
        if disposition != "form-data" or "name" not in options:
            raise ApiError(400, "malformed multipart part: no 'Content-Disposition: form-data; name=...'")
        self._name = options["name"]
        self._is_file = self._name == "file" or "filename" in options
        if self._is_file:
            if self._name != "file":
                raise ApiError(422, f"unexpected file field {self._name!r}; send the image as field 'file'")
            if self.file is not None:
                raise ApiError(422, "send one image per request (field 'file' given twice)")
            mime = media_type(self._headers.get("content-type", "application/octet-stream"))[0]
            if not is_image_type(mime):
                raise ApiError(415, f"field 'file' has content type {mime!r}; send an image (image/*)")
            self.file_type = mime
            self.filename = options.get("filename") or None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        limit = self.max_file_bytes if self._is_file else MAX_FIELD_BYTES
        if self._size > limit:
            if self._is_file:
                raise ApiError(413, f"image is larger than the limit of {human_bytes(limit)}")
            raise ApiError(422, f"form field {self._name!r} is longer than {limit} bytes")
        self._chunks.append(bytes(data[start:end]))

    def on_part_end(self) -> None:
        data = b"".join(self._chunks)
        self._chunks = []
        if self._is_file:
            self.file = data
        else:
            try:
                value = data.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(422, f"form field {self._name!r} is not UTF-8 text") from None
            if self._name in self.fields and self.fields[self._name] != value:
                raise ApiError(422, f"form field {self._name!r} given twice")
            self.fields[self._name] = value


async def read_upload(request: Any, max_bytes: int, *, timeout: float = DEFAULT_UPLOAD_TIMEOUT
                      ) -> tuple[bytes | None, dict[str, str], str | None]:
    """The image's bytes (``None`` for a form without field ``file``), the form fields (empty for a
    raw body) and the upload's file name (multipart only), read within the limits: 413 past
    ``max_bytes``, 408 when the body takes longer than ``timeout`` seconds."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser

    header = request.headers.get("content-type", "")
    mime, options = media_type(header)
    multipart = mime == "multipart/form-data"
    if mime == "application/x-www-form-urlencoded":  # options only (e.g. 'url'), no image
        return None, await _read_urlencoded(request, timeout), None
    if not multipart and not is_image_type(mime):
        shown = mime or "none"
        raise ApiError(415, f"unsupported content type {shown!r}; send an image as multipart field 'file' "
                            f"or as the raw body with Content-Type image/*")
    limit = max_bytes + MULTIPART_OVERHEAD if multipart else max_bytes
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, f"invalid Content-Length {length!r}") from None
        if declared > limit:
            raise ApiError(413, f"request body of {human_bytes(declared)} is larger than the limit of "
                                f"{human_bytes(max_bytes)}")

    if multipart:
        boundary = options.get("boundary")
        if not boundary:
            raise ApiError(400, "multipart/form-data without a boundary")
        form = _Multipart(max_bytes)
        parser = MultipartParser(boundary.encode("latin-1"), form.callbacks())  # type: ignore[arg-type]
        try:
            async for chunk in _limited_stream(request, limit, timeout, f"request body is larger than the limit "
                                                                        f"of {human_bytes(max_bytes)}"):
                parser.write(chunk)
            parser.finalize()
        except FormParserError as exc:
            raise ApiError(400, f"malformed multipart body ({one_line(str(exc))})") from None
        return form.file, form.fields, form.filename

    chunks = [chunk async for chunk in _limited_stream(
        request, limit, timeout, f"image is larger than the limit of {human_bytes(max_bytes)}")]
    return b"".join(chunks), {}, None


async def _read_urlencoded(request: Any, timeout: float) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (options and ``url``)."""
    import urllib.parse

    body = b"".join([chunk async for chunk in _limited_stream(
        request, MULTIPART_OVERHEAD, timeout, f"a form without an image is larger than "
                                               f"{human_bytes(MULTIPART_OVERHEAD)}")])
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                                       max_num_fields=MAX_PARTS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"malformed form body ({one_line(str(exc))})") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if len(value) > MAX_FIELD_BYTES:
            raise ApiError(422, f"form field {name!r} is longer than {MAX_FIELD_BYTES} bytes")
        if name in fields and fields[name] != value:
            raise ApiError(422, f"form field {name!r} given twice")
        fields[name] = value
    return fields


async def _limited_stream(request: Any, limit: int, timeout: float, too_large: str) -> AsyncIterator[bytes]:
    """The request body's chunks, counted as they arrive: 413 past ``limit`` bytes (whatever
    Content-Length said), 408 past the deadline, 400 when the client goes away."""
    from starlette.requests import ClientDisconnect

    deadline = time.monotonic() + timeout
    chunks = request.stream().__aiter__()
    received = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                chunk = await asyncio.wait_for(chunks.__anext__(), remaining)
            except StopAsyncIteration:
                return
            except (TimeoutError, asyncio.TimeoutError):
                raise ApiError(408, f"the request body did not arrive within {timeout:g} s",
                               {"Connection": "close"}) from None
            received += len(chunk)
            if received > limit:
                raise ApiError(413, too_large)
            yield chunk
    except ClientDisconnect:
        raise ApiError(400, "client disconnected") from None
