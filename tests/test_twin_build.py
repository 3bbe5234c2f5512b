"""The full-size twins themselves (`make twin`): the real graphs' structure and interface, and
a build that redoes only what changed, names a failing step and leaves no half-made twin."""

import json

import pytest
from helpers import (
    TWIN,
)

CONTROL_FLOW_OPS = {"Enter", "Exit", "Merge", "Switch", "NextIteration", "LoopCond", "TensorArrayV3"}


def twin_graphs(architecture):
    return json.loads((TWIN / "manifest.json").read_text())["architectures"][architecture]["graphs"]


def quantized_convolutions(ops):
    return sum(
        count for op, count in ops.items() if op.startswith(("QuantizedConv2DWith", "QuantizedDepthwiseConv2DWith"))
    )


def test_twin_graphs_have_the_real_structure():
    fp32, int8 = twin_graphs("rfcn_resnet101")["fp32"], twin_graphs("rfcn_resnet101")["int8"]
    assert fp32["nodes"] > 7000 and fp32["ops"]["Conv2D"] == 110 and fp32["bytes"] > 200e6
    assert CONTROL_FLOW_OPS | {"Assert"} <= set(fp32["ops"])
    assert "Conv2D" not in int8["ops"] and CONTROL_FLOW_OPS <= set(int8["ops"])
    assert quantized_convolutions(int8["ops"]) == 110
    # Faster R-CNN ResNet50: 53 convolutions of ResNet50 (block4 once: its copy for the final
    # boxes is dropped at export), the RPN's 3, and its per-class NMS loop.
    fp32, int8 = twin_graphs("faster_rcnn_resnet50")["fp32"], twin_graphs("faster_rcnn_resnet50")["int8"]
    assert fp32["nodes"] > 6000 and fp32["ops"]["Conv2D"] == 56 and fp32["bytes"] > 100e6
    assert CONTROL_FLOW_OPS | {"Assert", "CropAndResize"} <= set(fp32["ops"])
    assert "Conv2D" not in int8["ops"] and quantized_convolutions(int8["ops"]) == 56
    # SSD-MobileNet v1: 34 convolutions and 13 depthwise ones; combined NMS, as Intel's graphs.
    fp32, int8 = twin_graphs("ssd_mobilenet_v1")["fp32"], twin_graphs("ssd_mobilenet_v1")["int8"]
    assert fp32["ops"]["Conv2D"] == 34 and fp32["ops"]["DepthwiseConv2dNative"] == 13 and fp32["bytes"] > 20e6
    assert fp32["ops"]["CombinedNonMaxSuppression"] == 1 and "NonMaxSuppressionV3" not in fp32["ops"]
    assert quantized_convolutions(int8["ops"]) == 47 and int8["ops"]["CombinedNonMaxSuppression"] == 1
    # The preprocessor's resize loop is in the preprocessing graph, not in the INT8 one.
    preprocess = twin_graphs("ssd_mobilenet_v1")["preprocess"]
    assert CONTROL_FLOW_OPS <= set(preprocess["ops"]) and not CONTROL_FLOW_OPS & set(int8["ops"])


def test_ssd_twin_has_intels_interface_and_names():
    from detbench.detection_graph import load_graph_def

    files = TWIN / "files"
    int8 = {
        node.name: node for node in load_graph_def(files / "ssdmobilenet_int8_pretrained_model_combinedNMS_s8.pb").node
    }
    assert int8["Preprocessor/subpart2"].op == "Placeholder" and "image_tensor" not in int8
    preprocess = {node.name for node in load_graph_def(files / "ssdmobilenet_preprocess.pb").node}
    assert {"image_tensor", "Preprocessor/sub"} <= preprocess
    fp32 = {node.name for node in load_graph_def(files / "ssdmobilenet_fp32_pretrained_model_combinedNMS.pb").node}
    # Upstream's scopes (the twin's own nets.mobilenet_v1): one MobilenetV1, as in Intel's graphs.
    assert {"image_tensor", "FeatureExtractor/MobilenetV1/Conv2d_13_pointwise/Relu6"} <= fp32
    assert not any("MobilenetV1/MobilenetV1" in name for name in fp32)


def test_an_unchanged_twin_is_not_rebuilt():
    import time

    from tools.twin import make_twin

    manifest = json.loads((TWIN / "manifest.json").read_text())
    # Checked first, so that a stale twin fails here instead of being rebuilt by the test.
    assert manifest["inputs_sha256"] == make_twin.inputs_digest(24, 0, 4), f"{TWIN} is older than its inputs: make twin"
    assert make_twin.inputs_digest(24, 1, 4) != manifest["inputs_sha256"]
    before = (TWIN / "manifest.json").stat().st_mtime_ns
    started = time.perf_counter()
    make_twin.make_twin(TWIN)
    assert time.perf_counter() - started < 10
    assert (TWIN / "manifest.json").stat().st_mtime_ns == before


def test_a_failing_step_names_itself_and_leaves_no_twin(tmp_path, monkeypatch):
    import dataclasses

    from detbench.common import StageError
    from tools.twin import make_twin

    broken = tmp_path / "broken.config"
    broken.write_text("model { faster_rcnn { num_classes: 'ninety' } }\n")
    monkeypatch.setattr(make_twin, "ARCHITECTURES", (dataclasses.replace(make_twin.ARCHITECTURES[0], config=broken),))
    output = tmp_path / "twin"
    with pytest.raises(StageError) as failure:
        make_twin.make_twin(output, count=2)
    message = str(failure.value)
    assert message.startswith("twin step export-fp32 failed (exit 1): ") and "\n" not in message
    assert (
        "num_classes" in message and f"log: {tmp_path / 'twin-logs' / 'rfcn_resnet101' / 'export-fp32.log'}" in message
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["broken.config", "twin-logs"]


def test_each_architecture_is_rebuilt_only_when_its_own_inputs_change(tmp_path, monkeypatch):
    """A changed SSD config changes SSD's digest alone; graphs whose digest still matches in an
    older twin (the machine cache's, say) are copied from it, not built."""
    import dataclasses

    from tools.twin import make_twin

    before = make_twin.architecture_digests(24, 0, 4)
    ssd = next(twin for twin in make_twin.ARCHITECTURES if twin.architecture == "ssd_mobilenet_v1")
    changed = tmp_path / "ssd.config"
    changed.write_text(ssd.config.read_text().replace("iou_threshold: 0.6", "iou_threshold: 0.5"))
    architectures = tuple(
        dataclasses.replace(twin, config=changed) if twin is ssd else twin for twin in make_twin.ARCHITECTURES
    )
    monkeypatch.setattr(make_twin, "ARCHITECTURES", architectures)
    after = make_twin.architecture_digests(24, 0, 4)
    assert [name for name in before if before[name] != after[name]] == ["ssd_mobilenet_v1"]
    files = tmp_path / "files"
    files.mkdir()
    frcnn = next(twin for twin in architectures if twin.architecture == "faster_rcnn_resnet50")
    entry = make_twin.reused_graphs(frcnn, after["faster_rcnn_resnet50"], [tmp_path / "no-such-twin", TWIN], files)
    assert entry["inputs_sha256"] == after["faster_rcnn_resnet50"]
    assert sorted(path.name for path in files.iterdir()) == sorted(frcnn.files())
    assert make_twin.reused_graphs(architectures[-1], after["ssd_mobilenet_v1"], [TWIN], files) is None


def test_a_missing_package_is_named(monkeypatch):
    from detbench.common import StageError
    from tools.twin import make_twin

    monkeypatch.setitem(make_twin.REQUIRED_MODULES, "no_such_module_here", "no-such-package")
    with pytest.raises(StageError, match=r"^twin step check_packages: no-such-package not installed: run `make twin`$"):
        make_twin.check_packages()
