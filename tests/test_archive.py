"""The raw WARC store: what each record holds, rotation by size and by day, reading back."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator

from tasks.archive import RawWriter, _inflated_member, raw_writer, read_raw
from tasks.records import RawRef

FETCHED = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Content-Encoding", "gzip"), ("ETag", '"abc"')]


def test_record_has_uri_date_headers_and_payload_digest(tmp_path: Path) -> None:
    body = "<html><body><p>Grüße aus Carrow</p></body></html>".encode()
    with raw_writer(tmp_path, now=FETCHED) as writer:
        ref = writer.write("https://news.example/a", 200, "OK", HEADERS, body, FETCHED)
    assert Path(ref.path).parent == tmp_path / "2026" / "11" / "20"
    with open(ref.path, "rb") as stream:
        stream.seek(ref.offset)
        record = next(iter(ArchiveIterator(stream)))
        payload = record.content_stream().read()
        assert record.rec_headers.get_header("WARC-Target-URI") == "https://news.example/a"
        assert record.rec_headers.get_header("WARC-Date") == "2026-11-20T10:30:00Z"
        digest = record.rec_headers.get_header("WARC-Payload-Digest")
        assert digest == "sha1:" + base64.b32encode(hashlib.sha1(body).digest()).decode()
        assert record.http_headers.get_statuscode() == "200"
        assert record.http_headers.get_header("ETag") == '"abc"'
        # stored decoded: the wire encoding header would make readers gunzip a plain body
        assert record.http_headers.get_header("Content-Encoding") is None
    assert payload == body
    back = read_raw(ref)
    assert (back.url, back.status, back.body) == ("https://news.example/a", 200, body)
    with open(ref.path, "rb") as stream:  # warcio checks both digests and the length as it reads
        checked = ArchiveIterator(stream, check_digests="raise")
        record = next(iter(checked))
        assert record.rec_headers.get_header("WARC-Block-Digest", "").startswith("sha1:")
        checked.read_to_end(record)  # raises on a wrong digest; the whole record, no more, no less
        assert record.digest_checker.passed is True and stream.tell() == ref.offset + ref.length


def test_each_record_is_a_plain_gzip_member_any_reader_inflates(tmp_path: Path) -> None:
    bodies = [f"<html><p>page {i}</p></html>".encode() * 50 for i in range(3)]
    with raw_writer(tmp_path, now=FETCHED) as writer:
        refs = [writer.write(f"https://news.example/{i}", 200, "OK", HEADERS, b, FETCHED) for i, b in enumerate(bodies)]
    data = Path(refs[0].path).read_bytes()
    assert [r.offset for r in refs] == [0, refs[0].length, refs[0].length + refs[1].length]
    assert refs[-1].offset + refs[-1].length == len(data)
    for ref, body in zip(refs, bodies, strict=True):  # the standard library's gzip, member by member
        record = gzip.decompress(data[ref.offset:ref.offset + ref.length])
        assert record.startswith(b"WARC/1.") and record.rstrip(b"\r\n").endswith(body)
    assert gzip.decompress(data).count(b"WARC/1.") == 3  # and the file as one multi-member stream (zcat)


def test_reads_back_through_the_member_or_the_stream_whatever_the_reference_says(tmp_path: Path) -> None:
    """A whole gzip member is inflated by ISA-L; bytes that are not one (a length that cuts the
    member short, an uncompressed WARC) leave warcio to read the stream: the same record either way."""
    bodies = [f"<html><p>page {i} Grüße</p></html>".encode() * 80 for i in range(3)]
    with raw_writer(tmp_path, now=FETCHED) as writer:
        refs = [writer.write(f"https://news.example/{i}", 200, "OK", HEADERS, b, FETCHED) for i, b in enumerate(bodies)]
    with open(refs[1].path, "rb") as stream:
        stream.seek(refs[1].offset)
        whole = _inflated_member(stream, refs[1].length)
        assert whole is not None and whole.getvalue().startswith(b"WARC/1.")
        assert whole.getvalue().rstrip(b"\r\n").endswith(bodies[1])
        for cut in (refs[1].length - 9, 0, 1):  # not a whole member: nothing, and the stream where it was
            stream.seek(refs[1].offset)
            assert _inflated_member(stream, cut) is None and stream.tell() == refs[1].offset
    for i, (ref, body) in enumerate(zip(refs, bodies, strict=True)):
        for length in (ref.length, ref.length - 9, 0, ref.length + 50):
            back = read_raw(RawRef(ref.path, ref.offset, length))
            assert (back.url, back.status, back.body) == (f"https://news.example/{i}", 200, body)
    # an uncompressed WARC (what some archives hold): the stream path reads it
    plain = tmp_path / "plain.warc"
    data = Path(refs[0].path).read_bytes()
    members = [gzip.decompress(data[r.offset:r.offset + r.length]) for r in refs]
    plain.write_bytes(b"".join(members))
    offset = len(members[0])
    back = read_raw(RawRef(str(plain), offset, len(members[1])))
    assert (back.url, back.body) == ("https://news.example/1", bodies[1])


def test_rotates_when_a_file_is_full(tmp_path: Path) -> None:
    body = b"<html>" + os.urandom(5000).hex().encode()[:5000] + b"</html>"  # hex: gzip cannot shrink it much
    with raw_writer(tmp_path, now=FETCHED, max_bytes=8000) as writer:
        refs = [writer.write(f"https://news.example/{i}", 200, "OK", HEADERS, body, FETCHED) for i in range(5)]
    assert len({r.path for r in refs}) >= 2
    assert [Path(r.path) for r in refs][-1] == writer.paths[-1] and len(writer.paths) == len({r.path for r in refs})
    assert [read_raw(r).url for r in refs] == [f"https://news.example/{i}" for i in range(5)]


def test_rotates_at_midnight_utc(tmp_path: Path) -> None:
    clock = iter([FETCHED, FETCHED + timedelta(hours=20)])
    writer = RawWriter(tmp_path, clock=lambda: next(clock))
    first = writer.write("https://news.example/1", 200, "OK", HEADERS, b"<p>1</p>", FETCHED)
    second = writer.write("https://news.example/2", 200, "OK", HEADERS, b"<p>2</p>", FETCHED)
    writer.close()
    assert Path(first.path).parent.name == "20" and Path(second.path).parent.name == "21"
    assert read_raw(second).body == b"<p>2</p>"


def test_nothing_written_leaves_no_file(tmp_path: Path) -> None:
    with raw_writer(tmp_path) as writer:
        pass
    assert writer.paths == [] and not any(tmp_path.rglob("*.warc.gz"))
