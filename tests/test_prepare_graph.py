"""Frozen graphs: extracted or copied, and checked to be detection GraphDefs."""

import tarfile

import pytest

from common import StageError
from detection_graph import OUTPUT_KEYS, Interface
from prepare_frozen_graph import prepare_graph

FP32_MEMBER = "rfcn_resnet101_fp32_coco/frozen_inference_graph.pb"


def test_int8_graph_is_checked_and_uses_quantized_kernels(demo_data, tmp_path):
    output = tmp_path / "int8" / "frozen_inference_graph.pb"
    ops = prepare_graph(demo_data / "files" / "rfcn_resnet101_int8_coco_pretrained_model.pb", output)
    assert output.is_file()
    assert {"QuantizeV2", "QuantizedConv2DWithBiasAndReluAndRequantize", "Dequantize"} <= set(ops)


def test_fp32_graph_comes_out_of_its_tarball(demo_data, tmp_path):
    output = tmp_path / "fp32" / "frozen_inference_graph.pb"
    ops = prepare_graph(demo_data / "files" / "rfcn_resnet101_fp32_coco_pretrained_model.tar.gz", output, FP32_MEMBER)
    assert "Conv2D" in ops and "QuantizeV2" not in ops


def test_truncated_graph_is_a_clear_error(demo_data, tmp_path):
    whole = (demo_data / "files" / "rfcn_resnet101_int8_coco_pretrained_model.pb").read_bytes()
    truncated = tmp_path / "truncated.pb"
    truncated.write_bytes(whole[: len(whole) // 2])
    output = tmp_path / "out.pb"
    with pytest.raises(StageError, match=f"^{truncated}: not a TensorFlow GraphDef, or truncated"):
        prepare_graph(truncated, output)
    assert list(tmp_path.iterdir()) == [truncated]


def test_graph_without_detection_outputs_is_refused(tmp_path):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.placeholder(tf.uint8, [None, None, None, 3], name="image_tensor")
    source = tmp_path / "classifier.pb"
    source.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(StageError, match="not a detection graph, it has no " + ", ".join(OUTPUT_KEYS)):
        prepare_graph(source, tmp_path / "out.pb")
    assert not (tmp_path / "out.pb").exists()


def test_a_graph_with_tensor_names_of_its_own_is_checked_by_them(demo_data, tmp_path):
    """models.<name>.input.tensor and .outputs name another interface, as Intel's SSD graphs
    have: the check asks for those nodes, and names the ones missing."""
    source = demo_data / "files" / "rfcn_resnet101_int8_coco_pretrained_model.pb"
    renamed = Interface("Preprocessor/sub", ["detection_boxes", "detection_scores", "detection_classes", "num_detections"])
    with pytest.raises(StageError, match=r"not a detection graph, it has no Preprocessor/sub node \(models.<name>.input"):
        prepare_graph(source, tmp_path / "out.pb", interface=renamed)
    assert not (tmp_path / "out.pb").exists()
    assert Interface.of_model({"input": {"tensor": "a"}, "outputs": dict(boxes="b", scores="s", classes="c", count="n")}
                              ).arguments() == ["--input-tensor=a", "--outputs=b,s,c,n"]  # fmt: skip


def test_wrong_member_in_tarball(tmp_path, demo_data):
    archive = demo_data / "files" / "rfcn_resnet101_fp32_coco_pretrained_model.tar.gz"
    with tarfile.open(archive) as tar:
        assert tar.getnames() == [FP32_MEMBER]
    with pytest.raises(StageError, match="no member 'frozen_inference_graph.pb'"):
        prepare_graph(archive, tmp_path / "out.pb", "frozen_inference_graph.pb")


def test_errors_name_the_archive_and_member_not_a_temporary_file(tmp_path):
    archive = tmp_path / "graph.tar.gz"
    broken = tmp_path / "frozen_inference_graph.pb"
    broken.write_bytes(b"\x0a\xff\xff not a graph")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(broken, arcname=FP32_MEMBER)
    with pytest.raises(StageError, match=f"^{archive}:{FP32_MEMBER}: not a TensorFlow GraphDef"):
        prepare_graph(archive, tmp_path / "out" / "graph.pb", FP32_MEMBER)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_archive_without_member_suggests_it(demo_data, tmp_path):
    archive = demo_data / "files" / "rfcn_resnet101_fp32_coco_pretrained_model.tar.gz"
    with pytest.raises(StageError, match=r"is an archive: name the graph inside it with --member"):
        prepare_graph(archive, tmp_path / "out.pb")
    assert not (tmp_path / "out.pb").exists()


def test_op_unknown_to_tensorflow_is_refused_at_once(demo_data, tmp_path):
    import tensorflow as tf

    from detection_graph import load_graph_def

    graph_def = load_graph_def(demo_data / "files" / "rfcn_resnet101_int8_coco_pretrained_model.pb")
    next(node for node in graph_def.node if node.op == "TopKV2").op = "IntelOnlyFusedTopK"
    source = tmp_path / "future.pb"
    source.write_bytes(graph_def.SerializeToString())
    with pytest.raises(StageError, match=f"^{source}: ops unknown to TensorFlow {tf.__version__}: IntelOnlyFusedTopK$"):
        prepare_graph(source, tmp_path / "out.pb")
    assert not (tmp_path / "out.pb").exists()


def test_member_of_a_graph_that_is_no_archive_is_one_line(demo_data, tmp_path):
    from conftest import error_lines, run_script

    graph = demo_data / "files" / "rfcn_resnet101_int8_coco_pretrained_model.pb"
    result = run_script("prepare_frozen_graph.py", graph, tmp_path / "out.pb", "--member", "a/frozen_inference_graph.pb")
    assert result.returncode == 1
    assert error_lines(result) == [
        f"error: {graph} is not a zip or tar archive, so it holds no member 'a/frozen_inference_graph.pb': if it "
        "is the graph itself, drop --member (models.<name>.member in the config); if not, download it again"
    ]
    assert len(result.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []
