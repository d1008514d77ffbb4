"""Block-wise distillation of candidates and the exact selection under a budget."""
