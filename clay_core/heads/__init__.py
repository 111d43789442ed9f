"""Task heads (segmentation, classification, regression) fine-tuned on the frozen Clay encoder.

- :mod:`~clay_core.heads.modules` - the head networks; :mod:`~clay_core.heads.labels` - truth;
- :mod:`~clay_core.heads.data` - chips (a :class:`~clay_core.chips.ChipSet`), targets, the
  spatial split; :mod:`~clay_core.heads.features` - encoder tokens and the feature cache;
- :mod:`~clay_core.heads.train` - :func:`train_head`; :mod:`~clay_core.heads.metrics`;
  :mod:`~clay_core.heads.predict`; :mod:`~clay_core.heads.checkpoint`;
- :mod:`~clay_core.heads.preview` and :mod:`~clay_core.heads.areas` - pictures and class areas;
- :mod:`~clay_core.heads.stage` - the ``head_model`` / ``head_predictions`` stages;
- :mod:`~clay_core.heads.probe` - the linear probe on labelled observations (``detections``);
- ``python -m clay_core.heads.cli`` trains on the synthetic world and prints the metrics.
"""

from clay_core.heads.areas import ClassArea, class_areas, class_areas_md
from clay_core.heads.checkpoint import (
    HEAD_FORMAT,
    LoadedHead,
    check_encoder,
    encoder_identity,
    load_head,
    loaded_identity,
    save_head,
)
from clay_core.heads.data import (
    chip_inputs,
    make_targets,
    materialized_partitions,
    read_cube_chips,
    read_partitions,
    source_chips,
    split_by_tile,
)
from clay_core.heads.features import FeatureCache, encode_tokens
from clay_core.heads.labels import (
    IGNORE,
    REF_COLUMNS,
    LabelSource,
    RasterLabels,
    SyntheticLabels,
    TableLabels,
    chip_refs,
    label_source,
    majority_class,
)
from clay_core.heads.metrics import ClassMetrics, MetricReport, ValueMetrics, ValueReport
from clay_core.heads.modules import (
    HEAD_TYPES,
    ClassificationHead,
    FrozenEncoderWithHead,
    HeadSpec,
    RegressionHead,
    SegmentationHead,
    build_head,
    freeze,
)
from clay_core.heads.predict import predict
from clay_core.heads.probe import PROBE_PARAMS, DetectionsResult, Probe, fit_probe, score_detections
from clay_core.heads.preview import class_map_preview, class_palette, colorize, preview_image
from clay_core.heads.stage import HeadModelResult, PredictionResult, head_dir, predict_partition, train_head_stage
from clay_core.heads.train import (
    CLASS_WEIGHTINGS,
    EpochLog,
    TrainConfig,
    TrainResult,
    class_weights_from_counts,
    train_head,
)

__all__ = [
    "HEAD_TYPES", "HeadSpec", "ClassificationHead", "SegmentationHead", "RegressionHead", "FrozenEncoderWithHead",
    "build_head", "freeze",
    "IGNORE", "REF_COLUMNS", "LabelSource", "RasterLabels", "TableLabels", "SyntheticLabels", "chip_refs",
    "majority_class", "label_source",
    "read_cube_chips", "materialized_partitions", "read_partitions", "source_chips", "make_targets", "split_by_tile",
    "chip_inputs",
    "encode_tokens", "FeatureCache",
    "MetricReport", "ValueReport", "ClassMetrics", "ValueMetrics",
    "TrainConfig", "CLASS_WEIGHTINGS", "class_weights_from_counts", "EpochLog", "TrainResult", "train_head",
    "predict",
    "PROBE_PARAMS", "Probe", "DetectionsResult", "fit_probe", "score_detections",
    "HEAD_FORMAT", "LoadedHead", "encoder_identity", "loaded_identity", "check_encoder", "save_head", "load_head",
    "class_palette", "colorize", "preview_image", "class_map_preview",
    "ClassArea", "class_areas", "class_areas_md",
    "HeadModelResult", "PredictionResult", "head_dir", "train_head_stage", "predict_partition",
]
