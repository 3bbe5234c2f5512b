"""Frozen graphs: extracted or copied, and checked to be detection GraphDefs."""

import tarfile

import pytest
from prepare_frozen_graph import prepare_graph

from detbench.common import StageError
from detbench.detection_graph import OUTPUT_KEYS, Interface

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
    renamed = Interface(
        "Preprocessor/sub", ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]
    )
    with pytest.raises(
        StageError, match=r"not a detection graph, it has no Preprocessor/sub node \(models.<name>.input"
    ):
        prepare_graph(source, tmp_path / "out.pb", interface=renamed)
    assert not (tmp_path / "out.pb").exists()
    assert Interface.of_model(
        {"input": {"tensor": "a"}, "outputs": dict(boxes="b", scores="s", classes="c", count="n")}
    ).arguments() == ["--input-tensor=a", "--outputs=b,s,c,n"]


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

    from detbench.detection_graph import load_graph_def

    graph_def = load_graph_def(demo_data / "files" / "rfcn_resnet101_int8_coco_pretrained_model.pb")
    next(node for node in graph_def.node if node.op == "TopKV2").op = "IntelOnlyFusedTopK"
    source = tmp_path / "future.pb"
    source.write_bytes(graph_def.SerializeToString())
    with pytest.raises(StageError, match=f"^{source}: ops unknown to TensorFlow {tf.__version__}: IntelOnlyFusedTopK$"):
        prepare_graph(source, tmp_path / "out.pb")
    assert not (tmp_path / "out.pb").exists()


def test_member_of_a_graph_that_is_no_archive_is_one_line(demo_data, tmp_path):
    from helpers import error_lines, run_script

    graph = demo_data / "files" / "rfcn_resnet101_int8_coco_pretrained_model.pb"
    result = run_script(
        "prepare_frozen_graph.py", graph, tmp_path / "out.pb", "--member", "a/frozen_inference_graph.pb"
    )
    assert result.returncode == 1
    assert error_lines(result) == [
        f"error: {graph} is not a zip or tar archive, so it holds no member 'a/frozen_inference_graph.pb': if it "
        "is the graph itself, drop --member (models.<name>.member in the config); if not, download it again"
    ]
    assert len(result.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def small_graphs(tmp_path):
    """A preprocessing graph (uint8 images to float pixels at 8x8) and a detector that starts
    after it, at a placeholder, as Intel's INT8 SSD-MobileNet and its preprocess.pb."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    preprocess, detector = tf.Graph(), tf.Graph()
    with preprocess.as_default():
        images = tf1.placeholder(tf.uint8, [None, None, None, 3], name="image_tensor")
        resized = tf1.image.resize_bilinear(tf.cast(images, tf.float32), [8, 8])
        tf.subtract(resized / 127.5, 1.0, name="Preprocessor/sub")
    with detector.as_default():
        pixels = tf1.placeholder(tf.float32, [None, 8, 8, 3], name="Preprocessor/subpart2")
        score = tf.reduce_mean(pixels, axis=[1, 2, 3])
        tf.identity(tf.tile(tf.reshape(score, [-1, 1, 1]), [1, 1, 4]), name=OUTPUT_KEYS[0])
        tf.identity(tf.reshape(score, [-1, 1]), name=OUTPUT_KEYS[1])
        tf.ones_like(tf.reshape(score, [-1, 1]), name=OUTPUT_KEYS[2])
        tf.ones_like(score, name=OUTPUT_KEYS[3])
    paths = tmp_path / "preprocess.pb", tmp_path / "detector.pb"
    for graph, path in zip((preprocess, detector), paths):
        path.write_bytes(graph.as_graph_def().SerializeToString())
    return paths


def test_a_graph_after_preprocessing_is_joined_to_its_preprocessing_graph(tmp_path):
    import numpy as np

    from detbench.detection_graph import default_interface, detect, load_graph_def, open_session

    preprocess, detector = small_graphs(tmp_path)
    output = tmp_path / "joined.pb"
    prepare_graph(detector, output, preprocess=(preprocess, "Preprocessor/sub", "Preprocessor/subpart2"))
    names = {node.name for node in load_graph_def(output).node}
    assert "image_tensor" in names and "Preprocessor/subpart2" not in names
    image = np.full((1, 5, 7, 3), 255, np.uint8)
    assert detect(open_session(load_graph_def(output)), default_interface(), image)["detection_scores"][0, 0] == 1.0
    with pytest.raises(
        StageError, match=r"the preprocessing graph has no Preprocessor/mul node \(models.<name>.preprocess.output\)$"
    ):
        prepare_graph(
            detector, tmp_path / "other.pb", preprocess=(preprocess, "Preprocessor/mul", "Preprocessor/subpart2")
        )
    with pytest.raises(StageError, match=r"the graph has no image_tensor2 node \(models.<name>.input.tensor\)$"):
        prepare_graph(detector, tmp_path / "other.pb", preprocess=(preprocess, "Preprocessor/sub", "image_tensor2"))
    # Joining a graph to itself: every name clashes.
    with pytest.raises(StageError, match=r"both have nodes named .* \.\.\.$"):
        prepare_graph(preprocess, tmp_path / "other.pb", preprocess=(preprocess, "Preprocessor/sub", "image_tensor"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["detector.pb", "joined.pb", "preprocess.pb"]
