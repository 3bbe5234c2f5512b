#!/usr/bin/env python3
"""Serve a folder over HTTP on 127.0.0.1, with Range requests, for mirrors and the offline demo.

It records every request (method, path, Range header), and can be told to drop
the connection part-way through a file once, which is how the tests show that
an interrupted download resumes.
"""

import argparse
import logging
import sys
import re
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


from detbench.common import run_main

log = logging.getLogger("serve_files")

RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class RequestHandler(BaseHTTPRequestHandler):
    server_version = "serve_files/1"

    def log_message(self, format, *args):
        log.info("%s %s", self.address_string(), format % args)

    def do_HEAD(self):
        self.respond(send_body=False)

    def do_GET(self):
        self.respond(send_body=True)

    def resolve(self):
        root = self.server.root
        relative = unquote(urlparse(self.path).path).lstrip("/")
        path = (root / relative).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path

    def respond(self, send_body):
        self.server.record(self.command, urlparse(self.path).path, self.headers)
        path = self.resolve()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        stat = path.stat()
        size = stat.st_size
        etag = f'"{size:x}-{stat.st_mtime_ns:x}"'
        start, end = 0, size - 1
        status = HTTPStatus.OK
        match = RANGE.fullmatch(self.headers.get("Range", "").strip())
        if_range = self.headers.get("If-Range")
        if match and if_range is not None and if_range != etag and self.server.validators:
            match = None  # the client's part is of an older version: send the whole file
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if start >= size or start > end:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        if self.server.validators:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(end - start + 1))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not send_body:
            return
        budget = self.server.take_cut(urlparse(self.path).path)
        with open(path, "rb") as stream:
            stream.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = stream.read(min(64 * 1024, remaining))
                if budget is not None:
                    chunk = chunk[:budget]
                    budget -= len(chunk)
                self.wfile.write(chunk)
                remaining -= len(chunk)
                if budget == 0:
                    self.drop_connection()
                    return

    def drop_connection(self):
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root, host="127.0.0.1", port=0, validators=True):
        """`validators=False` sends no ETag and ignores If-Range, as some mirrors do."""
        super().__init__((host, port), RequestHandler)
        self.root = Path(root).resolve()
        self.validators = validators
        self.requests = []
        self.cuts = {}
        self.lock = threading.Lock()
        self.thread = None

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def record(self, method, path, headers):
        with self.lock:
            self.requests.append(
                {"method": method, "path": path, "range": headers.get("Range"), "if_range": headers.get("If-Range")}
            )

    def cut_once(self, path, after_bytes):
        """Drop the connection after `after_bytes` of the next GET of `path`."""
        with self.lock:
            self.cuts["/" + path.lstrip("/")] = after_bytes

    def take_cut(self, path):
        with self.lock:
            return self.cuts.pop(path, None)

    def start(self):
        # A short poll: stop() waits for the loop to notice, and every demo run ends with one.
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to serve")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    args = parser.parse_args()
    server = FileServer(args.root, port=args.port)
    if args.port_file:
        args.port_file.write_text(f"{server.server_address[1]}\n")
    log.info("serving %s at %s", server.root, server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    run_main(main)
