"""lipx: visual-speech models from PyTorch training to real-time deployment.

Importing ``lipx`` is cheap: it never imports torch, onnxruntime or TensorRT.
"""

__version__ = "0.1.0"
