"""The raw response store: WARC files that fetch writes and extract reads back.

Raw HTML never travels between tasks (STYLE.md rule 3): fetch writes each response as one
gzip member of a WARC file and hands on a `RawRef` (path, offset, length); extraction
workers read the bytes back from there. Records of WARC files given as sources (CC-NEWS)
are referenced in place, so they are never copied.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from isal import isal_zlib
from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed
from warcio.statusandheaders import StatusAndHeaders, StatusAndHeadersParserException
from warcio.warcwriter import WARCWriter

from tasks.records import RawRef

# What warcio raises on a truncated or corrupt file. AttributeError: warcio 1.7/1.8 call
# `uri.startswith` on a record header cut off before its WARC-Target-URI.
WARC_ERRORS = (ArchiveLoadFailed, StatusAndHeadersParserException, EOFError, zlib.error, isal_zlib.error,
               ValueError, AttributeError)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawResponse:
    """One archived HTTP response."""

    url: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    date: str | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


_WIRE_HEADERS = {"content-encoding", "transfer-encoding", "content-length"}


# Files close at about this size; the WARC 1.1 guidelines and Common Crawl both use ~1 GB.
MAX_FILE_BYTES = 1024**3
# Each record's gzip member is deflated by ISA-L (isal), an ordinary gzip stream that zlib,
# warcio and every WARC reader inflate. It runs in the fetching process for every page, and was
# that process's biggest own cost in `ingest` (py-spy, then cProfile: ~10% of the fetch stage).
# On the 88 real pages of ../shared/bench/aeb-dev (183 KB of HTML on average) ISA-L level 1 took
# 0.35 ms a page for 23.6% of the size, level 3 0.99 ms for 22.6%; on 400 bench pages (108 KB)
# 0.21 against 0.55 ms, 24.8% against 24.5%. (Earlier, on 36 KB pages: zlib level 6 0.86 ms for
# 29.2%, zlib level 1 0.47 ms.) A 4% larger archive buys a third of the compression CPU.
GZIP_LEVEL = 1


class RawWriter:
    """Appends responses to WARC files under `raw_dir/YYYY/MM/DD/`; each record is its own gzip member.

    A new file starts when the current one reaches `max_bytes` or the UTC day changes, so files
    stay a manageable size and a day's raw pages sit in that day's folder. Every file is new and
    written by this writer only, so concurrent runs and workers never share one.
    """

    def __init__(self, raw_dir: Path, max_bytes: int = MAX_FILE_BYTES,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._raw_dir, self._max_bytes, self._clock = raw_dir, max_bytes, clock
        self._stream: io.BufferedWriter | None = None
        self._path = Path()
        self._day = ""
        self.paths: list[Path] = []

    def write(self, url: str, status: int, reason: str, headers: Iterable[tuple[str, str]],
              body: bytes, fetched_at: datetime) -> RawRef:
        """Archive one response (target URI, date, HTTP headers, payload digest) and return where it lives."""
        # The body is stored decoded, so the headers that described its wire form would lie
        # (and make readers decode it twice).
        kept = [(k, v) for k, v in headers if k.lower() not in _WIRE_HEADERS]
        kept.append(("Content-Length", str(len(body))))
        status_headers = StatusAndHeaders(f"{status} {reason}".strip(), kept, protocol="HTTP/1.1")
        stream, writer = self._current()
        # warcio adds WARC-Payload-Digest and WARC-Block-Digest (sha1, base32) to the record. Given
        # the payload's length it hashes the body twice (payload, block); without it, it copied the
        # body into a temporary file twice and hashed it three times, for the same bytes written
        # (0.17 against 0.10 ms for a 47 KB page; the digests were 8% of an ingest's loading process).
        record = writer.create_warc_record(
            url, "response", payload=io.BytesIO(body), length=len(body), http_headers=status_headers,
            warc_headers_dict={"WARC-Date": fetched_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        )
        plain = io.BytesIO()
        writer.out = plain
        writer.write_record(record)
        # One gzip member per record, compressed here rather than by warcio: its writer hard-codes
        # zlib level 9 (1.0 ms for a 36 KB page), and this runs in the fetching process.
        compressor = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, isal_zlib.MAX_WBITS + 16)
        offset = stream.tell()
        stream.write(compressor.compress(plain.getbuffer()) + compressor.flush())
        return RawRef(str(self._path), offset, stream.tell() - offset)

    def _current(self) -> tuple[io.BufferedWriter, WARCWriter]:
        """The open file, after rotating to a new one if it is full or from another day."""
        now = self._clock().astimezone(UTC)
        day = now.strftime("%Y/%m/%d")
        if self._stream is None or day != self._day or self._stream.tell() >= self._max_bytes:
            self.close()
            folder = self._raw_dir / day
            folder.mkdir(parents=True, exist_ok=True)
            self._path = folder / f"newsflow-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}.warc.gz"
            self._stream, self._day = self._path.open("xb"), day
            self._writer = WARCWriter(io.BytesIO(), gzip=False)  # writes to a buffer per record
            self.paths.append(self._path)
        return self._stream, self._writer

    def close(self) -> None:
        """Flush the open file to disk: the raw bytes are durable before any row points at them."""
        if self._stream is None:
            return
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        self._stream = None


@contextmanager
def raw_writer(raw_dir: Path, now: datetime | None = None,
               max_bytes: int = MAX_FILE_BYTES) -> Iterator[RawWriter]:
    """A writer on new WARC files under `raw_dir/YYYY/MM/DD/`, closed (and fsynced) on exit.

    The files are opened on the first write, so a batch that archives nothing leaves none;
    `now` pins the clock (tests).
    """
    writer = RawWriter(raw_dir, max_bytes, (lambda: now) if now else (lambda: datetime.now(UTC)))
    try:
        yield writer
    finally:
        writer.close()


def read_raw(ref: RawRef) -> RawResponse:
    """Read the response record that `ref` points to."""
    with open(ref.path, "rb") as stream:
        stream.seek(ref.offset)
        source = _inflated_member(stream, ref.length) or stream
        for record in ArchiveIterator(source):
            if record.rec_type != "response":
                break
            return to_raw_response(record)
    raise ValueError(f"no WARC response record at {ref.path}:{ref.offset}")


def _inflated_member(stream: BinaryIO, length: int) -> io.BytesIO | None:
    """The record's gzip member (the `length` bytes at the stream's position) inflated by ISA-L,
    or None (the stream back at its position) where those bytes are not one whole gzip member:
    an uncompressed WARC, a length that cuts the member short. warcio then reads the stream.

    Extraction workers read every page back this way, and warcio inflates with zlib: on 500 bench
    pages reading a record took 0.46 ms through warcio alone and 0.32 ms inflated here first
    (ISA-L inflates in half zlib's time), ~0.7% of a worker's time a page.
    """
    start = stream.tell()
    member = stream.read(length) if length > 0 else b""
    if member[:2] == b"\x1f\x8b":
        inflater = isal_zlib.decompressobj(isal_zlib.MAX_WBITS + 16)
        try:
            plain = inflater.decompress(member)
        except isal_zlib.error:  # not gzip after all: warcio says what is wrong
            pass
        else:
            if inflater.eof:
                return io.BytesIO(plain)
    stream.seek(start)
    return None


def to_raw_response(record: object) -> RawResponse:
    """A warcio response record as a RawResponse (body decoded from chunked/gzip transfer)."""
    http = record.http_headers  # type: ignore[attr-defined]
    status = int(http.get_statuscode() or 0) if http else 0
    headers = list(http.headers) if http else []
    body = record.content_stream().read()  # type: ignore[attr-defined]
    return RawResponse(
        url=record.rec_headers.get_header("WARC-Target-URI") or "",  # type: ignore[attr-defined]
        status=status,
        headers=headers,
        body=body,
        date=record.rec_headers.get_header("WARC-Date"),  # type: ignore[attr-defined]
    )


# --- erasing pages (`newsflow forget`) ------------------------------------------------------------
#
# A WARC file is read by offsets: the database points into it, and so may other tools. So a
# forgotten page is not cut out (every later offset would move); its gzip member is overwritten in
# place by one of exactly the same length that holds a WARC metadata record saying a page was
# removed, with neither its URL nor its content. The length is made up in the gzip header's
# comment field (RFC 1952 FCOMMENT), which every gzip reader skips: the file stays a valid WARC.
# Written by hand because no WARC or gzip library writes a member to a given length.


@dataclass(frozen=True, slots=True)
class Erased:
    """What `erase_pages` did: records overwritten (file, offset), and files it could not read to the end."""

    records: list[tuple[str, int]]
    unreadable: list[str]


def erase_pages(raw_dir: Path, covers: Callable[[str], bool], note: str) -> Erased:
    """Overwrite, in every WARC file newsflow wrote under `raw_dir`, each response record whose
    target URI `covers` accepts, with a same-length record that says only `note`. Files written by
    others (a CC-NEWS archive given to a backfill) are never touched."""
    records: list[tuple[str, int]] = []
    unreadable: list[str] = []
    for path in sorted(raw_dir.rglob("newsflow-*.warc.gz")):
        hits: list[tuple[int, int]] = []
        try:
            with path.open("rb") as stream:
                pages = ArchiveIterator(stream)
                for record in pages:
                    uri = record.rec_headers.get_header("WARC-Target-URI")
                    if record.rec_type == "response" and uri and covers(uri):
                        pages.read_to_end(record)
                        hits.append((pages.get_record_offset(), pages.get_record_length()))
        except Exception as exc:  # noqa: BLE001 (a truncated or corrupt file: say so, erase what was found)
            log.warning("%s: could not read to the end: %s", path, exc)
            unreadable.append(str(path))
        if not hits:
            continue
        with path.open("r+b") as stream:
            for offset, length in hits:
                stream.seek(offset)
                stream.write(tombstone(length, note))
                records.append((str(path), offset))
            stream.flush()
            os.fsync(stream.fileno())
    return Erased(records, unreadable)


def tombstone(length: int, note: str) -> bytes:
    """A gzip member of exactly `length` bytes holding a WARC metadata record with `note`."""
    writer = WARCWriter(io.BytesIO(), gzip=False)
    record = writer.create_warc_record(
        None, "metadata", payload=io.BytesIO(note.encode()), warc_content_type="text/plain",
        warc_headers_dict={"WARC-Date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    plain = io.BytesIO()
    writer.out = plain
    writer.write_record(record)
    data = plain.getvalue()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflate.compress(data) + deflate.flush()
    header = b"\x1f\x8b\x08\x10" + b"\x00" * 4 + b"\x00\xff"  # deflate, FCOMMENT, no mtime, OS unknown
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    padding = length - len(header) - 1 - len(body) - len(trailer)  # the comment ends with a NUL
    if padding < 0:
        raise ValueError(f"a record of {length} bytes is too short to hold the removal note")
    return header + b" " * padding + b"\x00" + body + trailer
