"""KServe V2 (Open Inference Protocol) messages and the conversions between them."""
