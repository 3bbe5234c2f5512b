"""OpenVINO IR folders as the stages write them: model.xml and model.bin with FP32 weights (the
default would store them in FP16) and a JSON report of how they were made, all or nothing."""

import json

from detbench.common import atomic_directory

IR_NAME = "model.xml"


def write_ir(model, output_dir, report_name, make_report):
    """Save `model` into `output_dir`, replacing it only once `make_report(ir_path)` (which may
    check the saved IR, and raise) has given the report written beside it as `report_name`."""
    import openvino as ov

    with atomic_directory(output_dir) as folder:
        ov.save_model(model, folder / IR_NAME, compress_to_fp16=False)
        report = make_report(folder / IR_NAME)
        (folder / report_name).write_text(json.dumps(report, indent=2) + "\n")
    return report
