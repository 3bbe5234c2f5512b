"""Helpers shared by the stage scripts: one-line errors, atomic outputs, digests, logging."""

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class StageError(Exception):
    """A failure whose message is the one-line cause shown to the user."""


# What a user can do about the OS errors a stage meets when it writes.
OS_ERROR_ADVICE = {
    errno.ENOSPC: "free some space, then run again",
    errno.EDQUOT: "free some space (disk quota), then run again",
    errno.EACCES: "check the folder's permissions",
    errno.EPERM: "check the folder's permissions",
    errno.EROFS: "choose a writable folder",
}


def describe_os_error(error, path=None):
    """One line for an OSError: the file, what went wrong, and what to do."""
    where = error.filename if error.filename is not None else path
    text = error.strerror or str(error)
    advice = OS_ERROR_ADVICE.get(error.errno)
    return f"{where}: {text}" + (f": {advice}" if advice else "")


def default_mode(directory=False):
    """Permissions a plain open() or mkdir() would give; mkstemp and mkdtemp give 0600/0700."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def setup_logging(verbose=False):
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=LOG_FORMAT,
        stream=sys.stderr,
    )


def run_main(main):
    """Run a script's main(); a StageError, or an OSError (disk full, permissions), becomes
    `error: <cause>` on one line and exit 1."""
    setup_logging()
    try:
        main()
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except OSError as error:
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside `path`; it becomes `path` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise StageError(f"{path} is a folder, not a file: remove it or choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    temporary.chmod(default_mode())
    try:
        yield temporary
        replace_naming_target(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def replace_naming_target(temporary, path):
    """os.replace, whose errors name `path`, not the temporary the user never asked for."""
    try:
        os.replace(temporary, path)
    except OSError as error:
        raise StageError(describe_os_error(OSError(error.errno, error.strerror), path)) from None


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StageError(f"{path} is a file, not a folder: remove it or choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    temporary.chmod(default_mode(directory=True))
    try:
        yield temporary
        if path.exists():
            shutil.rmtree(path)
        replace_naming_target(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def file_digests(path, algorithms=("md5", "sha256"), chunk_size=1 << 20):
    """Hex digests of a file, read once."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def keyed_paths(items, what):
    """{key: path} of KEY=PATH command-line arguments, in the order given."""
    paths = {}
    for item in items:
        key, separator, path = item.partition("=")
        if not separator or not key or not path:
            raise StageError(f"--{what} {item!r}: give KEY=PATH")
        paths[key] = Path(path)
    return paths


def import_package(folder, name):
    """Import the package `name` from `folder` (upstream code: a checkout, an unpacked wheel)
    without putting `folder` on sys.path, so that nothing else there can shadow a module."""
    import importlib.util

    package = Path(folder) / name
    spec = importlib.util.spec_from_file_location(
        name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or not (package / "__init__.py").is_file():
        raise StageError(f"{package}: not a Python package (no __init__.py)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
