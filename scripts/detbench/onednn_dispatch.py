"""What oneDNN actually ran: its version, the ISA it dispatched for, and each primitive's
implementation, from its verbose output at primitive creation.

`ONEDNN_VERBOSE=profile_create` makes oneDNN print a line when it creates a primitive (the
first steps, then its primitive cache serves them), not on every execution, so the timed
steps are left alone. The lines go to the process's standard output; `captured_stdout` reads
them there and passes them on to the log.
"""

import contextlib
import os
import re
import sys
import tempfile
from collections import Counter

VERBOSE_ENVIRONMENT = {"ONEDNN_VERBOSE": "profile_create"}
PREFIX = "onednn_verbose,"


def enable_verbose():
    """Ask oneDNN for its creation lines: before TensorFlow loads, which reads it once."""
    for key, value in VERBOSE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def captured_stdout():
    """Standard output at the file-descriptor level (where oneDNN's C++ writes) into a list of
    one string, then copied on to the real standard output."""
    sys.stdout.flush()
    saved = os.dup(1)
    text = []
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 1)
        try:
            yield text
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            capture.seek(0)
            content = capture.read()
            os.write(1, content)
            text.append(content.decode(errors="replace"))


def dispatch_facts(verbose_text):
    """{version, isa, implementations: {implementation: primitives created}, kernel_isas}
    from oneDNN's verbose lines; None when there are none (oneDNN off, or verbose unset)."""
    version = isa = None
    implementations = Counter()
    for line in verbose_text.splitlines():
        if not line.startswith(PREFIX):
            continue
        fields = line.split(",")
        if "info" in fields[2:4]:
            if match := re.search(r"oneDNN v(\S+)", line):
                version = match.group(1)
            if len(fields) > 4 and fields[3] == "cpu" and fields[4].startswith("isa:"):
                isa = line.split("isa:", 1)[1].strip()  # it may hold commas
        elif len(fields) > 6 and fields[3].startswith("create"):
            implementations[fields[6]] += 1
    if version is None and not implementations:
        return None
    kernel_isas = sorted({name.split(":", 1)[1] for name in implementations if ":" in name})
    return {
        "version": version,
        "isa": isa,
        "implementations": dict(implementations.most_common()),
        "kernel_isas": kernel_isas,
    }
