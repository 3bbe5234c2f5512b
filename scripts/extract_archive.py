#!/usr/bin/env python3
"""Extract one file or one folder from a zip or tar archive, safely and atomically.

The whole archive is checked first: a member with an absolute path, a `..`
component or a backslash, or a link that points outside the archive's folder is
refused and nothing is extracted. Every file's final path is resolved and must
lie inside the output folder, whatever the member prefix. The result appears
under its final name only once it is complete.
"""

import argparse
import logging
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from detbench.common import StageError, atomic_directory, atomic_file, describe_os_error, run_main

log = logging.getLogger("extract_archive")


class Member:
    """What the checks need to know of a zip or tar member."""

    def __init__(self, name, is_dir=False, link_target=None, is_special=False):
        self.name = name
        self.is_dir = is_dir
        self.link_target = link_target
        self.is_special = is_special


def escapes(path):
    """True if an archive path is absolute, has a `..` component, or a backslash (a Windows
    separator that would hide one). Real archives have none; refusing every `..`, not only
    those that climb above the archive's root, keeps a member from leaving a folder
    extracted without its prefix (`val2017/../annotations/x` out of `val2017`)."""
    if path.startswith("/") or (len(path) > 1 and path[1] == ":") or "\\" in path:
        return True
    return ".." in path.split("/")


def destination_inside(folder, relative, archive):
    """`folder`/`relative`, resolved; refused unless it lies inside `folder`."""
    root = Path(folder).resolve()
    destination = (root / relative).resolve()
    if destination == root or root not in destination.parents:
        raise StageError(f"{archive}: refusing member path {relative!r}: it leaves the target folder")
    return destination


def check_members(members, archive):
    for member in members:
        if escapes(member.name):
            raise StageError(f"{archive}: refusing member {member.name!r}: it leaves the target folder")
        if member.is_special:
            raise StageError(f"{archive}: refusing member {member.name!r}: device or fifo")
        if member.link_target is not None:
            # Links are never extracted; one that points out of the archive marks it hostile.
            target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.link_target))
            if posixpath.isabs(member.link_target) or "\\" in target or target.split("/")[0] == "..":
                raise StageError(
                    f"{archive}: refusing link {member.name!r} -> {member.link_target!r}: "
                    "it points outside the target folder"
                )


def zip_members(archive):
    members = []
    for info in archive.infolist():
        mode = info.external_attr >> 16
        target = archive.read(info).decode("utf-8", "replace") if stat.S_ISLNK(mode) else None
        members.append(Member(info.filename, info.is_dir(), target))
    return members


def tar_members(archive):
    members = []
    for info in archive.getmembers():
        target = info.linkname if (info.issym() or info.islnk()) else None
        special = info.ischr() or info.isblk() or info.isfifo()
        members.append(Member(info.name, info.isdir(), target, special))
    return members


def is_archive(path):
    """A zip or tar file (a frozen graph is neither)."""
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def open_archive(path):
    path = Path(path)
    if not path.is_file():
        raise StageError(f"no such archive: {path}")
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        return archive, zip_members(archive)
    try:
        archive = tarfile.open(path)
    except tarfile.TarError:
        # tarfile's own message lists every compression it tried, over several lines.
        raise StageError(f"{path}: not a zip or tar archive, or a truncated one: download it again") from None
    return archive, tar_members(archive)


def member_stream(archive, name):
    if isinstance(archive, zipfile.ZipFile):
        return archive.open(name)
    stream = archive.extractfile(name)
    if stream is None:
        raise StageError(f"{archive.name}: member {name!r} is not a regular file")
    return stream


# What a damaged archive raises while it is read: a bad CRC, a truncated gzip stream, ...
CORRUPT_ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, tarfile.TarError, EOFError)


def extract(archive_path, member_path, output):
    """Extract `member_path` (a file, or a folder and all below it) of the archive to `output`.

    A damaged archive or a failed write (disk full, permissions) is a one-line error, and
    nothing is left under `output`.
    """
    try:
        return extract_checked(archive_path, member_path, output)
    except CORRUPT_ARCHIVE_ERRORS as error:
        raise StageError(f"{archive_path}: corrupt or truncated archive ({error}): download it again") from None
    except OSError as error:
        raise StageError(describe_os_error(error, output)) from None


def extract_checked(archive_path, member_path, output):
    archive, members = open_archive(archive_path)
    with archive:
        check_members(members, archive_path)
        wanted = member_path.strip("/")
        files = [m for m in members if not m.is_dir and m.link_target is None]
        exact = [m for m in files if m.name.strip("/") == wanted]
        if exact:
            with atomic_file(output) as temporary:
                with member_stream(archive, exact[0].name) as reader, open(temporary, "wb") as writer:
                    shutil.copyfileobj(reader, writer, 1 << 20)
            log.info("extracted %s to %s", wanted, output)
            return 1
        below = [m for m in files if m.name.startswith(wanted + "/")]
        if not below:
            raise StageError(f"{archive_path}: no member {member_path!r}")
        with atomic_directory(output) as temporary:
            # Every destination is checked before the first byte is written.
            destinations = [destination_inside(temporary, m.name[len(wanted) + 1 :], archive_path) for m in below]
            for member, destination in tqdm(
                list(zip(below, destinations)), desc="extracting", unit="file", mininterval=10, ascii=True
            ):
                destination.parent.mkdir(parents=True, exist_ok=True)
                with member_stream(archive, member.name) as reader, open(destination, "wb") as writer:
                    shutil.copyfileobj(reader, writer, 1 << 20)
        log.info("extracted %d files under %s/ to %s", len(below), wanted, output)
        return len(below)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="zip, tar, tar.gz or tar.bz2 file")
    parser.add_argument("member", help="member file, or folder whose contents to extract")
    parser.add_argument("output", type=Path, help="file or folder to create")
    args = parser.parse_args()
    extract(args.archive, args.member, args.output)


if __name__ == "__main__":
    run_main(main)
