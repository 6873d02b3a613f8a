"""Inference: model files → predictions. numpy, Pillow and ONNX Runtime; torch only for ``.pt`` files.

``classifier`` (the core: decode, batch, thread, results), ``onnx_runtime`` and ``torch_runtime``
(the two kinds of model file), ``predict`` (``load_model``, ``PredictConfig``, the CSV and JSON
writers), ``parquet`` (the Parquet row format; pyarrow only when used).
"""

from .classifier import Classifier, Prediction
from .predict import load_model, write_predictions

__all__ = ["Classifier", "Prediction", "load_model", "write_predictions"]
