# R-FCN ResNet101 on COCO val2017, INT8 and FP32: from nothing to benchmark, accuracy and report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/coco.smk"
include: "rules/tfrecord.smk"
include: "rules/models.smk"
include: "rules/inference.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
