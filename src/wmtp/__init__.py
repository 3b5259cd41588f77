"""wmtp: Weighted Multi-Token Prediction training for code and math language models."""

__version__ = "0.1.0"
