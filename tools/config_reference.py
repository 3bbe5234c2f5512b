"""Write config/README.md's key reference from config/schema.yaml's descriptions, so that the
schema stays the one place a key is described (tests/test_style.py checks it is current).

    .venv/bin/python -m tools.config_reference
"""

import argparse
from pathlib import Path

from detbench.common import run_main
from detbench.config_schema import key_reference

README = Path(__file__).resolve().parents[1] / "config" / "README.md"
BEGIN = "<!-- key reference: written by `python -m tools.config_reference` from config/schema.yaml -->"
END = "<!-- end of the key reference -->"


def with_reference(text):
    """`text` with the part between the markers replaced by the schema's key reference."""
    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    return "\n".join([before + BEGIN, *key_reference(), END + after])


def main():
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    README.write_text(with_reference(README.read_text()))


if __name__ == "__main__":
    run_main(main)
