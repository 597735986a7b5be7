"""Registered models at work: predictions from raw images, a folder, the HTTP server, ONNX/TorchScript export."""
