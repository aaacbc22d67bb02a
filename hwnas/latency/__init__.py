"""ONNX Runtime latency tables and the latency predictor.

`profile_space` measures every distinct piece of a space on this machine (or `write_bundle` /
`import_bundle` do it on a device we cannot reach), fits a calibration on whole subnets and
writes a TABLE; `LatencyPredictor` turns a TABLE into whole-network predictions.
"""

from hwnas.latency.model import LatencyModel, latency_model
from hwnas.latency.predictor import LatencyPredictor, fit_calibration
from hwnas.latency.profile import (
    DEFAULT_CALIBRATION_SUBNETS, ProfileOptions, export_subnet, import_bundle, measure_subnet, profile_space, write_bundle,
)
from hwnas.latency.validate import validate_table
from hwnas.latency.table import Calibration, EntryStats, Fingerprint, LatencyTable, load_table, space_digest

__all__ = [
    "Calibration", "DEFAULT_CALIBRATION_SUBNETS", "EntryStats", "Fingerprint", "LatencyModel", "LatencyPredictor", "LatencyTable",
    "ProfileOptions",
    "export_subnet", "fit_calibration", "latency_model", "import_bundle", "load_table", "measure_subnet", "profile_space",
    "space_digest", "validate_table", "write_bundle",
]
