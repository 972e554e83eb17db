"""Model runtimes behind the ModelRuntime SPI: the built-in Python runtime and its clients."""
