# R-FCN ResNet101 on COCO val2017 (and with config/zoo.yaml Intel's detection family), every model
# of the registry (FP32, INT8, BF16): from nothing to benchmark, accuracy, diagnostics and report.
import sys

from snakemake.utils import min_version

sys.path.insert(0, f"{workflow.basedir}/scripts")
from detbench.config_schema import check_config_file

min_version("9.0")


# Read first by the project, so that a YAML mistake is named by file and line.
check_config_file("config/config.yaml")


configfile: "config/config.yaml"


report: "rules/captions/workflow.rst"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/coco.smk"
include: "rules/tfrecord.smk"
include: "rules/models.smk"
include: "rules/openvino.smk"
include: "rules/benchmark.smk"
include: "rules/loadgen.smk"
include: "rules/accuracy.smk"
include: "rules/diagnostics.smk"
include: "rules/report.smk"


onstart:
    keep_linked_output_folders()


rule all:
    default_target: True
    input:
        PLAN.final_outputs(),
