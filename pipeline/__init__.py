"""Korean shopping-review sentiment with a character-level stacked LSTM.

    from pipeline import sentiment_predict
    sentiment_predict(["배송 빠르고 좋아요", "별로에요 다시는 안 사요"])  # ['긍정', '부정']

Importing the package is cheap, and scoring needs no TensorFlow: a predictor runs model.onnx on
ONNX Runtime (model.keras on Keras only when asked, or when there is no model.onnx to trust).
"""

import os

# Fewer TensorFlow C++ logs (TF 2.21 still prints a few start-up lines).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["Predictor", "sentiment_predict", "get_predictor", "PipelineError"]


def __getattr__(name: str):
    if name in ("Predictor", "sentiment_predict", "get_predictor"):
        from pipeline import predict

        return getattr(predict, name)
    if name == "PipelineError":
        from pipeline.errors import PipelineError

        return PipelineError
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
