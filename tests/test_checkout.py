"""The pinned tensorflow/models checkout, against a real local git repository."""

import subprocess
import sys

import pytest
from checkout_tensorflow_models import checkout

from detbench.common import StageError


def test_checkout_is_at_the_pin_with_compiled_protos(demo_data, tmp_path):
    repository = demo_data / "tensorflow_models"
    pin = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=repository, capture_output=True, text=True).stdout.strip()
    output = tmp_path / "tensorflow_models"
    checkout(repository.as_uri(), pin, output)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=output, capture_output=True, text=True).stdout.strip()
    assert head == pin
    protos = output / "research" / "object_detection" / "protos"
    assert (protos / "string_int_label_map_pb2.py").is_file()
    # Sparse: only the Object Detection API is in the work tree.
    assert sorted(p.name for p in output.iterdir() if p.name != ".git") == ["README.md", "research"]
    # Shallow: the pin is the only commit fetched.
    count = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=output, capture_output=True, text=True)
    assert count.stdout.strip() == "1"


def test_compiled_proto_imports_under_installed_protobuf(demo_data, tmp_path):
    repository = demo_data / "tensorflow_models"
    pin = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repository, capture_output=True, text=True).stdout.strip()
    checkout(str(repository), pin, tmp_path / "models")
    probe = (
        "from object_detection.protos import string_int_label_map_pb2 as m;"
        "item = m.StringIntLabelMap(item=[m.StringIntLabelMapItem(name='person', id=1)]);"
        "print(item.item[0].id)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path / "models" / "research", capture_output=True, text=True
    )
    assert result.stdout.strip() == "1", result.stderr


def test_commit_not_in_repository_fails_cleanly(demo_data, tmp_path):
    output = tmp_path / "models"
    with pytest.raises(StageError, match="not our ref|not in the repository|failed"):
        checkout((demo_data / "tensorflow_models").as_uri(), "f" * 40, output)
    assert not output.exists()
    assert list(tmp_path.iterdir()) == []


def test_abbreviated_commit_is_refused(demo_data, tmp_path):
    with pytest.raises(StageError, match="full 40-digit hex id"):
        checkout(str(demo_data / "tensorflow_models"), "7a9934df", tmp_path / "models")
