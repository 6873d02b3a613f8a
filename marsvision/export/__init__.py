"""Export (needs the ``[train]`` extra): torch → ONNX fp32 (``onnx``) → int8 (``quantize``, with
``int8_tuning`` before it)."""
