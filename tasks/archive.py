"""The raw response store: WARC files that fetch writes and extract reads back.

Raw HTML never travels between tasks (STYLE.md rule 3): fetch writes each response as one
gzip member of a WARC file and hands on a `RawRef` (path, offset, length); extraction
workers read the bytes back from there. Records of WARC files given as sources (CC-NEWS)
are referenced in place, so they are never copied.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from tasks.records import RawRef


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


class RawWriter:
    """Appends responses to one WARC file; each record is its own gzip member."""

    def __init__(self, stream: io.BufferedWriter, path: Path) -> None:
        self._stream = stream
        self._path = path
        self._writer = WARCWriter(stream, gzip=True)

    def write(self, url: str, status: int, reason: str, headers: Iterable[tuple[str, str]],
              body: bytes, fetched_at: datetime) -> RawRef:
        """Archive one response and return where it lives."""
        # The body is stored decoded, so the headers that described its wire form would lie
        # (and make readers decode it twice).
        kept = [(k, v) for k, v in headers if k.lower() not in _WIRE_HEADERS]
        kept.append(("Content-Length", str(len(body))))
        status_headers = StatusAndHeaders(f"{status} {reason}".strip(), kept, protocol="HTTP/1.1")
        record = self._writer.create_warc_record(
            url, "response", payload=io.BytesIO(body), http_headers=status_headers,
            warc_headers_dict={"WARC-Date": fetched_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        )
        offset = self._stream.tell()
        self._writer.write_record(record)
        return RawRef(str(self._path), offset, self._stream.tell() - offset)


@contextmanager
def raw_writer(raw_dir: Path, now: datetime | None = None) -> Iterator[RawWriter]:
    """A writer on a new WARC file under `raw_dir/YYYY/MM/DD/`, one file per fetch batch.

    A file per batch keeps concurrent runs and workers from ever sharing a file.
    """
    now = now or datetime.now(UTC)
    folder = raw_dir / now.strftime("%Y/%m/%d")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"newsflow-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}.warc.gz"
    with path.open("xb") as stream:
        yield RawWriter(stream, path)
        stream.flush()


def read_raw(ref: RawRef) -> RawResponse:
    """Read the response record that `ref` points to."""
    with open(ref.path, "rb") as stream:
        stream.seek(ref.offset)
        for record in ArchiveIterator(stream):
            if record.rec_type != "response":
                break
            return to_raw_response(record)
    raise ValueError(f"no WARC response record at {ref.path}:{ref.offset}")


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
