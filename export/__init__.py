"""Export tools: zoo-export, model cards, publishing."""
import zoo  # noqa: F401  (sets TensorFlow's environment defaults, e.g. oneDNN, before it is imported)
