"""Downloads over real HTTP on 127.0.0.1: resume, checksums, and clean failures."""

import hashlib
import socket
import subprocess
import sys

import pytest
from download import download, part_path
from helpers import SCRIPTS, tool_environment

from detbench.common import StageError
from tools.demo.serve_files import FileServer

PAYLOAD_SIZE = 3 * 1024 * 1024 + 17


@pytest.fixture
def payload_server(tmp_path):
    """A server with one 3 MiB file of random bytes; yields (server, bytes)."""
    root = tmp_path / "served"
    root.mkdir()
    payload = bytes(range(256)) * (PAYLOAD_SIZE // 256) + b"x" * (PAYLOAD_SIZE % 256)
    (root / "payload.bin").write_bytes(payload)
    server = FileServer(root).start()
    yield server, payload
    server.stop()


def md5(data):
    return hashlib.md5(data).hexdigest()


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_download_verifies_and_leaves_only_the_output(payload_server, tmp_path):
    server, payload = payload_server
    output = tmp_path / "out" / "payload.bin"
    download(f"{server.url}/payload.bin", output, md5=md5(payload), size=len(payload))
    assert output.read_bytes() == payload
    assert not part_path(output).exists()
    assert list(output.parent.iterdir()) == [output]


def test_cut_connection_is_resumed_with_a_range_request(payload_server, tmp_path):
    server, payload = payload_server
    server.cut_once("payload.bin", after_bytes=1_000_000)
    output = tmp_path / "payload.bin"
    download(
        f"{server.url}/payload.bin", output, sha256=hashlib.sha256(payload).hexdigest(), retries=2, backoff_seconds=0
    )
    assert output.read_bytes() == payload
    gets = [request for request in server.requests if request["method"] == "GET"]
    assert len(gets) == 2
    assert gets[0]["range"] is None
    start = int(gets[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 1_000_000


def test_interrupted_run_leaves_part_and_next_run_resumes(payload_server, tmp_path):
    server, payload = payload_server
    server.cut_once("payload.bin", after_bytes=2_000_000)
    output = tmp_path / "payload.bin"
    url = f"{server.url}/payload.bin"
    with pytest.raises(StageError, match="gave up after 1 attempts"):
        download(url, output, md5=md5(payload), retries=0)
    assert not output.exists()
    resumed_from = part_path(output).stat().st_size
    assert 0 < resumed_from <= 2_000_000
    download(url, output, md5=md5(payload), retries=0)
    assert output.read_bytes() == payload
    assert server.requests[-1]["range"] == f"bytes={resumed_from}-"


def test_changed_file_is_fetched_whole_not_spliced(payload_server, tmp_path):
    server, payload = payload_server
    server.cut_once("payload.bin", after_bytes=1_500_000)
    output = tmp_path / "payload.bin"
    url = f"{server.url}/payload.bin"
    with pytest.raises(StageError):
        download(url, output, retries=0)
    new_payload = payload[::-1]
    (server.root / "payload.bin").write_bytes(new_payload)
    download(url, output, md5=md5(new_payload), retries=0)
    assert output.read_bytes() == new_payload
    assert server.requests[-1]["range"] is not None and server.requests[-1]["if_range"]


def test_part_from_another_url_is_not_resumed(payload_server, tmp_path):
    server, payload = payload_server
    output = tmp_path / "payload.bin"
    part_path(output).write_bytes(b"bytes of some other file")
    download(f"{server.url}/payload.bin", output, md5=md5(payload))
    assert output.read_bytes() == payload
    assert server.requests[-1]["range"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload.bin", "served"]


def test_wrong_checksum_fails_and_leaves_nothing(payload_server, tmp_path):
    server, _ = payload_server
    output = tmp_path / "out" / "payload.bin"
    with pytest.raises(StageError, match="checksum mismatch: md5 .*, expected 0{32}"):
        download(f"{server.url}/payload.bin", output, md5="0" * 32)
    assert list(output.parent.iterdir()) == []


def test_missing_file_is_a_clear_404(payload_server, tmp_path):
    server, _ = payload_server
    with pytest.raises(StageError, match="HTTP 404"):
        download(f"{server.url}/nothing-here.zip", tmp_path / "out" / "x.zip", retries=3, backoff_seconds=0)
    assert list((tmp_path / "out").iterdir()) == []
    assert len(server.requests) == 1  # a 404 is final: no retries


def test_unreachable_host_is_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/val2017.zip"
    with pytest.raises(StageError, match=r"connection refused \(host 127\.0\.0\.1:\d+, gave up after 3 attempts\)"):
        download(url, tmp_path / "val2017.zip", retries=2, backoff_seconds=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("form", ["file_url", "plain_path"])
def test_local_mirrors(tmp_path, form):
    source = tmp_path / "mirror" / "model.pb"
    source.parent.mkdir()
    source.write_bytes(b"graph bytes")
    url = source.as_uri() if form == "file_url" else str(source)
    output = tmp_path / "out" / "model.pb"
    download(url, output, md5=md5(b"graph bytes"))
    assert output.read_bytes() == b"graph bytes"


def test_command_line_error_is_one_line_and_nonzero(payload_server, tmp_path):
    server, _ = payload_server
    output = tmp_path / "payload.bin"
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "download.py"), f"{server.url}/payload.bin", str(output), "--md5", "1" * 32],
        capture_output=True,
        text=True,
        env=tool_environment(),
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "checksum mismatch" in errors[0]
    assert not output.exists() and not part_path(output).exists()


@pytest.fixture
def bare_server(tmp_path):
    """A server that sends no ETag or Last-Modified (so no If-Range) for one 3 MiB file."""
    root = tmp_path / "bare"
    root.mkdir()
    old = bytes(range(256)) * (PAYLOAD_SIZE // 256)
    (root / "f.bin").write_bytes(old)
    server = FileServer(root, validators=False).start()
    yield server, root / "f.bin", old
    server.stop()


def cut_then_change(server, served, output):
    """A transfer cut after 1 MB, then the server's file replaced: returns the new bytes."""
    server.cut_once("f.bin", after_bytes=1_000_000)
    with pytest.raises(StageError, match="gave up after 1 attempts"):
        download(f"{server.url}/f.bin", output, retries=0)
    assert 0 < part_path(output).stat().st_size <= 1_000_000
    new = bytes(reversed(served.read_bytes()))
    served.write_bytes(new)
    return new


def test_unguarded_part_is_not_resumed(bare_server, tmp_path, caplog):
    server, served, _ = bare_server
    output = tmp_path / "f.bin"
    new = cut_then_change(server, served, output)
    download(f"{server.url}/f.bin", output, retries=0)
    assert output.read_bytes() == new  # whole, never the old head spliced to the new tail
    assert server.requests[-1]["range"] is None
    assert "starting again from byte 0" in caplog.text


def test_checksum_guards_a_resume_and_a_bad_splice_is_fetched_again(bare_server, tmp_path, caplog):
    server, served, _ = bare_server
    output = tmp_path / "f.bin"
    new = cut_then_change(server, served, output)
    download(f"{server.url}/f.bin", output, md5=md5(new), retries=0)
    assert output.read_bytes() == new
    ranges = [request["range"] for request in server.requests if request["method"] == "GET"]
    assert ranges[1].startswith("bytes=") and ranges[2] is None  # resumed, spliced, fetched again
    assert "downloading again from byte 0" in caplog.text


def test_mismatch_after_fetching_again_says_so(bare_server, tmp_path):
    server, served, old = bare_server
    output = tmp_path / "f.bin"
    cut_then_change(server, served, output)
    with pytest.raises(StageError, match=r"checksum mismatch: .*\(also after downloading again from byte 0\)$"):
        download(f"{server.url}/f.bin", output, md5=md5(old), retries=0)
    assert not output.exists() and not part_path(output).exists()


def run_download(*arguments):
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "download.py"), *map(str, arguments)],
        capture_output=True,
        text=True,
        env=tool_environment(),
    )
    return result.returncode, [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_full_disk_is_one_line_and_leaves_no_part(payload_server, small_tmpfs):
    server, payload = payload_server
    disk = small_tmpfs("1m")
    status, errors = run_download(f"{server.url}/payload.bin", disk / "payload.bin", "--retries", 0)
    assert status == 1
    assert errors == [f"error: {disk}/payload.bin.part: No space left on device: free some space, then run again"]
    assert list(disk.iterdir()) == []


def test_read_only_folder_is_one_line(payload_server, small_tmpfs):
    server, _ = payload_server
    folder = small_tmpfs(readonly=True)
    status, errors = run_download(f"{server.url}/payload.bin", folder / "payload.bin", "--retries", 0)
    assert status == 1 and len(errors) == 1
    assert errors[0].startswith(f"error: {folder}/payload.bin.part") and errors[0].endswith(
        "Read-only file system: choose a writable folder"
    )


def test_output_that_is_a_folder_is_refused_before_downloading(payload_server, tmp_path):
    server, _ = payload_server
    output = tmp_path / "downloads" / "payload.bin"
    output.mkdir(parents=True)
    status, errors = run_download(f"{server.url}/payload.bin", output)
    assert status == 1
    assert errors == [f"error: {output} is a folder: remove it, or download to another path"]
    assert [p.name for p in output.parent.iterdir()] == ["payload.bin"] and server.requests == []


def test_part_longer_than_the_file_restarts_at_once_even_without_retries(payload_server, tmp_path, caplog):
    """A part left by a larger file: nothing to resume, but no failed attempt either."""
    server, payload = payload_server
    output = tmp_path / "payload.bin"
    url = f"{server.url}/payload.bin"
    part_path(output).write_bytes(payload + b"more bytes than the file has")
    from download import origin_path

    origin_path(part_path(output)).write_text(f'{{"url": "{url}", "validator": null}}')
    download(url, output, md5=md5(payload), retries=0)
    assert output.read_bytes() == payload
    ranges = [request["range"] for request in server.requests if request["method"] == "GET"]
    assert ranges == [f"bytes={len(payload) + 28}-", None]
    assert "downloading from byte 0" in caplog.text


def test_checksum_mismatch_says_what_to_do(payload_server, tmp_path):
    server, _ = payload_server
    status, errors = run_download(f"{server.url}/payload.bin", tmp_path / "payload.bin", "--md5", "0" * 32)
    assert status == 1 and len(errors) == 1
    assert errors[0].endswith(
        "the source does not serve the file the config pins; check a mirror's URL, or if the file changed "
        "upstream, check it and update the checksum"
    )


def test_folder_given_as_the_url_is_named(tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    status, errors = run_download(folder, tmp_path / "payload.bin")
    assert status == 1
    assert errors == [f"error: {folder} is a folder, not a file: give the path of the file inside it"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror"]
