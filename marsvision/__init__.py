"""marsvision: classify Curiosity rover (MSL) images into content classes."""

from .predict import Classifier, Prediction, load_model

__all__ = ["Classifier", "Prediction", "load_model", "__version__"]
__version__ = "0.1.0"
