"""Deployable export: BN folding, ONNX with metadata, ORT parity and accuracy, INT8 (QDQ), .ort for ORT Mobile."""

from hwnas.export.core import ExportResult, ParityError, export_subnet
from hwnas.export.fold import fold_batchnorm, fold_conv_bn
from hwnas.export.int8_score import Int8Score, score_int8
from hwnas.export.onnx_io import ModelMetadata, Preprocessing, read_metadata
from hwnas.export.ort_format import OrtFormatError
from hwnas.export.outputs import check_new_file, check_writable_dir, int8_path

__all__ = [
    "ExportResult", "Int8Score", "ModelMetadata", "OrtFormatError", "ParityError", "Preprocessing", "check_new_file",
    "check_writable_dir", "export_subnet", "fold_batchnorm", "fold_conv_bn", "int8_path", "read_metadata", "score_int8",
]
