"""Files: atomic writes and inputs, model files (safetensors + JSON), what a model file holds, PNG."""
