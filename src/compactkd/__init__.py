"""compactkd: compact CNN structure learning by knowledge distillation (ICPR 2020)."""

__version__ = "0.1.0"
