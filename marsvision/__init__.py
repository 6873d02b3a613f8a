"""marsvision: classify Curiosity rover (MSL) images into content classes.

import marsvision
model = marsvision.load_model()                  # the bundled int8 model
results = model.predict(["a.jpg", "folder/"])    # files, folders, arrays, PIL images
marsvision.write_predictions(results, "out.csv")
"""

from .inference import Classifier, Prediction, load_model, write_predictions

__all__ = ["Classifier", "Prediction", "load_model", "write_predictions", "__version__"]
__version__ = "0.1.0"
