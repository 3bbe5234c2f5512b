#!/usr/bin/env python3
"""Download one file: resumable, retried, checksum-verified, written atomically.

Accepts http(s):// URLs, file:// URLs and plain local paths (for mirrors). An
interrupted HTTP transfer leaves OUTPUT.part behind (and OUTPUT.part.origin, its URL
and the server's ETag or Last-Modified); the next attempt, or the next run, asks the
server for the remaining bytes with an HTTP Range request, conditional on the file
being unchanged (If-Range). A part from another URL is never resumed, nor one that
nothing can vouch for: without a validator from the server or a configured checksum,
a changed file would be spliced unnoticed, so the transfer starts again from byte 0.
A checksum mismatch after a resume is retried once from byte 0.
"""

import argparse
import errno
import json
import logging
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from tqdm import tqdm

from detbench.common import StageError, describe_os_error, file_digests, run_main

log = logging.getLogger("download")

CHUNK_SIZE = 64 * 1024  # small, so a dropped connection loses little of what arrived
# 408 (request timeout) and 429 (too many requests) are worth another try; other 4xx are final.
RETRYABLE_CLIENT_ERRORS = {408, 429}


class RetryableError(Exception):
    """A transfer failure that another attempt may cure."""


def part_path(output):
    output = Path(output)
    return output.with_name(output.name + ".part")


def origin_path(part):
    """Beside a part: the URL it came from and the server's validator (ETag or Last-Modified)."""
    return part.with_name(part.name + ".origin")


def read_origin(part):
    try:
        return json.loads(origin_path(part).read_text())
    except (OSError, ValueError):
        return {}


def discard_part(part):
    part.unlink(missing_ok=True)
    origin_path(part).unlink(missing_ok=True)


def discard_foreign_part(part, url):
    """A part left by a download of another URL must not be resumed."""
    if part.exists() and read_origin(part).get("url") != url:
        log.warning("discarding %s: it was not downloaded from %s", part, url)
        discard_part(part)


def local_source(url):
    """The local path behind a file:// URL or plain path, or None for a remote URL."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(url)
    raise StageError(f"unsupported URL scheme {parsed.scheme!r} in {url}")


def progress_bar(total, initial, name):
    return tqdm(
        total=total,
        initial=initial,
        desc=name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        ascii=True,
        mininterval=1 if sys.stderr.isatty() else 10,
    )


def copy_local(source, part):
    if source.is_dir():
        raise StageError(f"{source} is a folder, not a file: give the path of the file inside it")
    if not source.is_file():
        raise StageError(f"no such file: {source}")
    with open(source, "rb") as reader, open(part, "wb") as writer:
        with progress_bar(source.stat().st_size, 0, source.name) as bar:
            while chunk := reader.read(CHUNK_SIZE):
                writer.write(chunk)
                bar.update(len(chunk))


def describe_network_error(error):
    """A short cause for a requests exception, whose own text spans several nested reprs."""
    text = str(error)
    if isinstance(error, requests.Timeout):
        return "timed out"
    for needle, cause in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("Failed to resolve", "host name not found"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("IncompleteRead", "connection closed before the end of the file"),
        ("Connection broken", "connection broken"),
    ):
        if needle in text:
            return cause
    return text.splitlines()[0][:200] if text else type(error).__name__


def fetch_once(session, url, part, timeouts, checksummed):
    """One HTTP attempt, appending to `part` from where it stops. Returns when complete, with
    the byte it resumed at (0: the whole file was sent)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {}
    validator = read_origin(part).get("validator") if offset else None
    if offset and not (validator or checksummed):
        log.warning(
            "not resuming %s at byte %d: the server sent no ETag or Last-Modified and no checksum is "
            "configured, so a changed file could not be told apart; starting again from byte 0",
            url,
            offset,
        )
        discard_part(part)
        offset = 0
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            # The server sends the whole file instead if it changed since the part was written.
            headers["If-Range"] = validator
    with session.get(url, stream=True, timeout=timeouts, headers=headers) as response:
        status = response.status_code
        if status == 416 and offset:
            # The part may already hold the whole file: the server says how long it is.
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return offset
            # A part longer than the file (it changed, or another was left here): not a failed
            # attempt, just nothing to resume; the whole file is asked for at once.
            log.warning(
                "server refused the resume range at byte %d (file is %s bytes); downloading from byte 0",
                offset,
                total or "of unknown size",
            )
            discard_part(part)
            return fetch_once(session, url, part, timeouts, checksummed)
        if 400 <= status < 500 and status not in RETRYABLE_CLIENT_ERRORS:
            raise StageError(f"{url}: HTTP {status} {response.reason}")
        if status not in (200, 206):
            raise RetryableError(f"HTTP {status} {response.reason}")
        if status == 206:
            start = response.headers.get("Content-Range", "").split(" ")[-1].split("-")[0]
            if start != str(offset):
                log.warning("server answered range %s for byte %d; downloading from byte 0", start, offset)
                discard_part(part)
                response.close()
                return fetch_once(session, url, part, timeouts, checksummed)
            log.info("resuming %s at byte %d", url, offset)
        else:
            offset = 0  # the server sent the whole file
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            origin_path(part).write_text(json.dumps({"url": url, "validator": validator}))
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        written = offset
        with open(part, "ab" if offset else "wb") as writer:
            with progress_bar(total, offset, Path(urlparse(url).path).name) as bar:
                for chunk in response.iter_content(CHUNK_SIZE):
                    writer.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        if total is not None and written != total:
            raise RetryableError(f"got {written} of {total} bytes")
    return offset


def fetch_http(url, part, retries, backoff_seconds, timeouts, checksummed=False):
    """Fetch `url` into `part`, resuming and retrying; returns the byte the final attempt
    resumed at (0 if it received the whole file)."""
    session = requests.Session()
    session.headers["User-Agent"] = "rfcn-benchmark-workflow"
    attempt = 0
    while True:
        try:
            return fetch_once(session, url, part, timeouts, checksummed)
        except (RetryableError, requests.RequestException) as error:
            if isinstance(error, requests.RequestException):
                cause = describe_network_error(error)
            else:
                cause = str(error)
            attempt += 1
            if attempt > retries:
                host = urlparse(url).netloc
                raise StageError(f"{url}: {cause} (host {host}, gave up after {attempt} attempts)") from error
            delay = backoff_seconds * 2 ** (attempt - 1)
            log.warning("attempt %d failed (%s); retrying in %.1f s", attempt, cause, delay)
            time.sleep(delay)


def verify(part, url, md5=None, sha256=None, size=None):
    """Check size and checksums of the finished part; a bad part is removed."""
    actual_size = part.stat().st_size
    digests = file_digests(part)
    log.info("%s: %d bytes, sha256 %s, md5 %s", url, actual_size, digests["sha256"], digests["md5"])
    problems = []
    if size is not None and actual_size != size:
        problems.append(f"size {actual_size} bytes, expected {size}")
    for name, expected in (("md5", md5), ("sha256", sha256)):
        if expected and digests[name] != expected.lower():
            problems.append(f"{name} {digests[name]}, expected {expected.lower()}")
    if problems:
        discard_part(part)
        raise StageError(
            f"{url}: checksum mismatch: " + "; ".join(problems) + ": the source does not serve the file the "
            "config pins; check a mirror's URL, or if the file changed upstream, check it and update the checksum"
        )
    if not (md5 or sha256):
        log.warning("no checksum configured for %s; observed sha256 %s", url, digests["sha256"])


def download(
    url,
    output,
    md5=None,
    sha256=None,
    size=None,
    retries=5,
    backoff_seconds=2.0,
    connect_timeout=15.0,
    read_timeout=60.0,
):
    """Fetch `url` to `output`; `output` exists afterwards only if it is complete and verified."""
    output = Path(output)
    if output.is_dir():
        raise StageError(f"{output} is a folder: remove it, or download to another path")
    output.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(output)
    try:
        fetch_and_verify(url, part, md5, sha256, size, retries, backoff_seconds, (connect_timeout, read_timeout))
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            discard_part(part)  # it cannot be finished where it is
        raise StageError(describe_os_error(error, part)) from None
    part.replace(output)
    origin_path(part).unlink(missing_ok=True)
    log.info("saved %s", output)


def fetch_and_verify(url, part, md5, sha256, size, retries, backoff_seconds, timeouts):
    """Bring `url` into `part` and check it; a checksum mismatch after a resume is fetched again."""
    source = local_source(url)
    discard_foreign_part(part, url)
    if source is None:
        checksummed = bool(md5 or sha256)
        resumed_at = fetch_http(url, part, retries, backoff_seconds, timeouts, checksummed)
        try:
            verify(part, url, md5=md5, sha256=sha256, size=size)
        except StageError as mismatch:
            if not resumed_at:
                raise
            # The part may predate a change of the file that no validator revealed.
            log.warning("%s; it was resumed at byte %d: downloading again from byte 0", mismatch, resumed_at)
            fetch_http(url, part, retries, backoff_seconds, timeouts, checksummed)
            try:
                verify(part, url, md5=md5, sha256=sha256, size=size)
            except StageError as again:
                raise StageError(f"{again} (also after downloading again from byte 0)") from None
    else:
        copy_local(source, part)
        origin_path(part).write_text(json.dumps({"url": url}))
        verify(part, url, md5=md5, sha256=sha256, size=size)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="http(s):// or file:// URL, or a local path")
    parser.add_argument("output", type=Path, help="where the verified file goes")
    parser.add_argument("--md5", help="expected MD5 (hex)")
    parser.add_argument("--sha256", help="expected SHA-256 (hex)")
    parser.add_argument("--size", type=int, help="expected size in bytes")
    parser.add_argument("--retries", type=int, default=5, help="retries after the first attempt")
    parser.add_argument("--backoff", type=float, default=2.0, help="first retry delay, seconds; doubles")
    parser.add_argument("--connect-timeout", type=float, default=15.0, help="seconds")
    parser.add_argument("--read-timeout", type=float, default=60.0, help="seconds")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    download(
        args.url,
        args.output,
        md5=args.md5,
        sha256=args.sha256,
        size=args.size,
        retries=args.retries,
        backoff_seconds=args.backoff,
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
    )


if __name__ == "__main__":
    run_main(main)
