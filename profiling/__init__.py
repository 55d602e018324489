"""The profiling lab (``python -m profiling --help``). ``profiling.predict(kernel, grid, *args, ...)``
predicts one launch of any Triton kernel with the static model (profiling/predict.py)."""
from . import predict  # noqa: F401  (callable: profiling.predict(kernel, grid, ...))
