"""File sharing: the server's rules on StringTransport, and a real 50 MiB transfer."""

import hashlib
import os

import pytest

from tcpchat import wire

from .helpers import Peer, kinds, make_factory


@pytest.fixture
def factory(tmp_path):
    return make_factory(tmp_path, files=True, max_file_size=10 * 1024 * 1024, max_storage=12 * 1024 * 1024)


def logged_in(factory, name):
    peer = Peer(factory)
    peer.login(name)
    return peer


def offer(peer, data, name="report.pdf", tid=1, sha=None, size=None):
    peer.send({"type": "upload", "tid": tid, "name": name, "size": len(data) if size is None else size,
               "sha256": sha or hashlib.sha256(data).hexdigest(), "mime": "application/pdf"})


def send_data(peer, data, tid=1, chunk=wire.CHUNK_SIZE):
    for i in range(0, len(data), chunk):
        peer.send_payload(wire.encode_chunk(tid, data[i : i + chunk]))


def all_files(root):
    """Every file under the file store but its link key (made once, when the store is)."""
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                  if os.path.join(d, f) != os.path.join(str(root), "link-key"))


def test_upload_is_stored_announced_and_acknowledged(factory, tmp_path):
    """A good upload is stored by hash, acknowledged with upload-done and announced to everyone."""
    alice, bob = logged_in(factory, "alice"), logged_in(factory, "bob")
    alice.frames(), bob.frames()
    data = os.urandom(200_000)
    offer(alice, data)
    send_data(alice, data)
    frames = alice.frames()
    assert kinds(frames) == ["upload-ready", "event", "upload-done"]  # the uploader sees its file event too
    done = frames[2]
    sha = hashlib.sha256(data).hexdigest()
    assert done["file"] == {"id": 1, "name": "report.pdf", "size": 200_000, "sha256": sha, "mime": "application/pdf"}
    (event,) = bob.frames()
    assert event["kind"] == "file" and event["name"] == "alice" and event["file"] == done["file"]
    assert event["id"] == done["id"]
    with open(tmp_path / "files" / "objects" / sha[:2] / sha, "rb") as f:
        assert f.read() == data
    assert all_files(tmp_path / "files" / "tmp") == []


def test_file_events_are_part_of_history(factory):
    """Someone joining later sees the file in the replayed history."""
    alice = logged_in(factory, "alice")
    offer(alice, b"hello")
    send_data(alice, b"hello")
    replay = [f for f in Peer(factory).login("bob") if f.get("replay")]
    assert [(e["kind"], e["file"]["name"]) for e in replay if e["kind"] == "file"] == [("file", "report.pdf")]


def test_identical_files_are_stored_once(factory, tmp_path):
    """The same content shared twice is one object on disk and two file records."""
    alice = logged_in(factory, "alice")
    for tid, name in ((1, "a.bin"), (2, "b.bin")):
        offer(alice, b"same bytes", name=name, tid=tid)
        send_data(alice, b"same bytes", tid=tid)
    dones = [f for f in alice.frames() if f["type"] == "upload-done"]
    assert [d["file"]["id"] for d in dones] == [1, 2]
    assert len(all_files(tmp_path / "files" / "objects")) == 1


def test_empty_file_can_be_shared(factory):
    """A zero-byte file completes at once."""
    alice = logged_in(factory, "alice")
    alice.frames()
    offer(alice, b"", name="empty.txt")
    assert kinds(alice.frames()) == ["upload-ready", "event", "upload-done"]


@pytest.mark.parametrize(
    "frame_changes, code",
    [
        ({"size": 10 * 1024 * 1024 + 1}, "file-too-large"),
        ({"name": "../../etc/passwd"}, "bad-file-name"),
        ({"name": "a/b"}, "bad-file-name"),
        ({"name": "..\\evil.exe"}, "bad-file-name"),
        ({"name": "nul\x00.txt"}, "bad-file-name"),
        ({"name": "CON.txt"}, "bad-file-name"),
        ({"name": "line\nfeed"}, "bad-file-name"),
        ({"name": "x" * 300}, "bad-file-name"),
        ({"name": ""}, "bad-file-name"),
    ],
)
def test_refused_offers(factory, tmp_path, frame_changes, code):
    """Offers breaking a rule get the documented code, and nothing is written anywhere."""
    alice = logged_in(factory, "alice")
    alice.frames()
    frame = {"type": "upload", "tid": 7, "name": "ok.txt", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
    frame.update(frame_changes)
    alice.send(frame)
    send_data(alice, b"hello", tid=7)  # data sent without waiting is dropped silently
    frames = alice.frames()
    assert frames == [{"type": "error", "code": code, "message": wire.ERROR_TEXT[code] if code != "file-too-large" else frames[0]["message"], "ref": "upload", "tid": 7}]
    assert all_files(tmp_path / "files") == []
    assert not (tmp_path / "etc").exists()


def test_quota_is_enforced_counting_uploads_in_progress(factory):
    """Uploads that would push stored plus in-progress bytes over --max-storage are refused."""
    alice = logged_in(factory, "alice")
    alice.frames()
    big = 8 * 1024 * 1024
    alice.send({"type": "upload", "tid": 1, "name": "a", "size": big, "sha256": "0" * 64})
    alice.send({"type": "upload", "tid": 2, "name": "b", "size": big, "sha256": "0" * 64})
    frames = alice.frames()
    assert kinds(frames) == ["upload-ready", "error"] and frames[1]["code"] == "quota-exceeded"


def test_too_many_uploads_and_reused_tid(factory):
    """More than four uploads at once, or a tid in use, are refused."""
    alice = logged_in(factory, "alice")
    alice.frames()
    for tid in range(1, 6):
        alice.send({"type": "upload", "tid": tid, "name": f"f{tid}", "size": 10, "sha256": "0" * 64})
    alice.send({"type": "upload", "tid": 1, "name": "again", "size": 10, "sha256": "0" * 64})
    codes = [f.get("code") for f in alice.frames()]
    assert codes == [None, None, None, None, "too-many-uploads", "transfer-in-use"]


def test_corrupted_upload_stores_and_announces_nothing(factory, tmp_path):
    """A wrong SHA-256 leaves no file, no record, no announcement and no temp file."""
    alice, bob = logged_in(factory, "alice"), logged_in(factory, "bob")
    alice.frames(), bob.frames()
    data = os.urandom(100_000)
    offer(alice, data, sha=hashlib.sha256(b"something else").hexdigest())
    send_data(alice, data)
    frames = alice.frames()
    assert kinds(frames) == ["upload-ready", "error"] and frames[1]["code"] == "hash-mismatch"
    assert bob.frames() == []
    assert all_files(tmp_path / "files") == []
    assert factory.files.reserved == 0


def test_extra_data_is_a_size_mismatch(factory, tmp_path):
    """More bytes than declared abort the upload."""
    alice = logged_in(factory, "alice")
    alice.frames()
    offer(alice, b"12345", size=3)
    send_data(alice, b"12345")
    assert [f.get("code") for f in alice.frames()] == [None, "size-mismatch"]
    assert all_files(tmp_path / "files") == []


def test_disconnect_mid_upload_leaves_no_temp_file(factory, tmp_path):
    """A client vanishing mid-upload leaves nothing behind and announces nothing."""
    alice, bob = logged_in(factory, "alice"), logged_in(factory, "bob")
    bob.frames()
    data = os.urandom(300_000)
    offer(alice, data)
    send_data(alice, data[:100_000])
    assert len(all_files(tmp_path / "files" / "tmp")) == 1
    alice.transport.loseConnection()
    assert all_files(tmp_path / "files") == []
    assert [e["kind"] for e in bob.frames()] == ["leave"]
    assert factory.files.reserved == 0


def test_cancelled_upload_is_removed(factory, tmp_path):
    """upload-cancel removes the partial file; data still in flight is ignored."""
    alice = logged_in(factory, "alice")
    alice.frames()
    offer(alice, b"x" * 100)
    send_data(alice, b"x" * 50)
    alice.send({"type": "upload-cancel", "tid": 1})
    send_data(alice, b"x" * 50)
    assert kinds(alice.frames()) == ["upload-ready"]
    assert all_files(tmp_path / "files") == []


def test_stalled_upload_times_out(factory, tmp_path):
    """An upload with no data for 60 s is abandoned with upload-timeout."""
    alice = logged_in(factory, "alice")
    alice.frames()
    offer(alice, b"x" * 100)
    send_data(alice, b"x" * 10)
    for _ in range(13):
        factory.clock.advance(5)
        alice.send({"type": "pong"})
    assert [f.get("code") for f in alice.frames()][-1] == "upload-timeout"
    assert all_files(tmp_path / "files") == []


def test_data_for_unknown_transfer(factory):
    """Data frames for a transfer that never existed get no-such-transfer."""
    alice = logged_in(factory, "alice")
    alice.frames()
    alice.send_payload(wire.encode_chunk(99, b"x"))
    assert alice.frames()[0]["code"] == "no-such-transfer"


def upload(peer, data, name="f.bin", tid=1):
    offer(peer, data, name=name, tid=tid)
    send_data(peer, data, tid=tid)
    return [f for f in peer.frames() if f["type"] == "upload-done"][0]["file"]


def download(peer, file_id, tid=5, offset=None):
    frame = {"type": "download", "tid": tid, "file": file_id}
    if offset is not None:
        frame["offset"] = offset
    peer.send(frame)
    frames = peer.frames()
    body = b"".join(f.data for f in frames if isinstance(f, wire.Chunk))
    return frames, body


def test_download_streams_the_file(factory):
    """A download gets download-start, data frames of bounded size, download-done."""
    alice, bob = logged_in(factory, "alice"), logged_in(factory, "bob")
    data = os.urandom(300_000)
    info = upload(alice, data)
    bob.frames()
    frames, body = download(bob, info["id"])
    assert frames[0] == {"type": "download-start", "tid": 5, "file": info, "offset": 0}
    assert frames[-1] == {"type": "download-done", "tid": 5}
    assert all(len(f.data) <= wire.CHUNK_SIZE for f in frames if isinstance(f, wire.Chunk))
    assert body == data


def test_download_resumes_from_an_offset(factory):
    """Asking with an offset sends only the rest of the file."""
    alice = logged_in(factory, "alice")
    data = os.urandom(200_000)
    info = upload(alice, data)
    frames, body = download(alice, info["id"], offset=123_456)
    assert frames[0]["offset"] == 123_456 and body == data[123_456:]
    frames, body = download(alice, info["id"], tid=6, offset=200_000)
    assert body == b"" and kinds(frames) == ["download-start", "download-done"]


def test_download_errors(factory):
    """Unknown files and offsets past the end are refused with their codes."""
    alice = logged_in(factory, "alice")
    info = upload(alice, b"abc")
    assert download(alice, 999)[0][0]["code"] == "no-such-file"
    assert download(alice, info["id"], offset=4)[0][0]["code"] == "bad-offset"


def test_download_respects_backpressure(factory):
    """The server sends file data only while the socket takes it; memory stays bounded."""
    alice = logged_in(factory, "alice")
    data = os.urandom(2_000_000)
    info = upload(alice, data)
    alice.frames()
    transport, proto = alice.transport, alice.proto
    real_write = transport.write

    def write(chunk):  # a socket buffer of 128 KiB: past it, the transport pauses its producer
        real_write(chunk)
        if len(transport.value()) > 128 * 1024 and not proto.writePaused:
            proto.pauseProducing()

    transport.write = write
    alice.send({"type": "download", "tid": 5, "file": info["id"]})
    body, rounds = b"", 0
    while True:
        assert len(transport.value()) <= 128 * 1024 + wire.CHUNK_SIZE + 64  # never the whole file
        frames = alice.frames()
        body += b"".join(f.data for f in frames if isinstance(f, wire.Chunk))
        if "download-done" in kinds(frames):
            break
        rounds += 1
        assert rounds < 100
        proto.resumeProducing()  # the socket drained
    assert body == data and rounds > 5


def test_chat_continues_while_a_download_is_paused(factory):
    """Chat frames still reach a client whose download is waiting on backpressure."""
    alice, bob = logged_in(factory, "alice"), logged_in(factory, "bob")
    info = upload(alice, os.urandom(500_000))
    bob.frames()
    bob.proto.pauseProducing()
    bob.send({"type": "download", "tid": 5, "file": info["id"]})
    alice.send({"type": "say", "text": "can you see this?"})
    frames = bob.frames()
    assert "download-start" in kinds(frames)
    assert [f["text"] for f in frames if f.get("kind") == "message"] == ["can you see this?"]


def test_full_disk_is_reported_as_quota_exceeded(factory, tmp_path, monkeypatch):
    """When the disk cannot hold the upload, the uploader is told plainly and nothing is left behind."""
    import errno

    from tcpchat.server import files

    def no_space(f, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_preallocate", no_space)
    alice = logged_in(factory, "alice")
    alice.frames()
    offer(alice, b"x" * 1000)
    send_data(alice, b"x" * 1000)  # already on its way: dropped silently
    frames = alice.frames()
    assert [f.get("code") for f in frames] == [None, "quota-exceeded"]
    assert frames[1]["message"] == "The server's disk is full."
    assert all_files(tmp_path / "files") == []
    assert factory.files.reserved == 0
