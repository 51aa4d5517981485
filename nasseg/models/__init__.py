"""Networks of both search spaces: ops, encoder, decoders, segmenter, weights."""
from .encoder import MobileNetV2Encoder
from .ops import AGG_OPS, OPS
from .segmenter import Segmenter, TrainOutput, build_segmenter, count_parameters
from .weights import (PretrainedWeightsUnavailable, WeightsError, export_original_weights,
                      load_imagenet_encoder, load_original_weights)

__all__ = ["OPS", "AGG_OPS", "MobileNetV2Encoder", "Segmenter", "TrainOutput", "build_segmenter",
           "count_parameters", "load_original_weights", "export_original_weights",
           "load_imagenet_encoder", "WeightsError", "PretrainedWeightsUnavailable"]
