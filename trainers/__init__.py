"""Command-line tools: zoo-train, zoo-eval, zoo-embed, zoo-quickstart."""
import zoo  # noqa: F401  (sets TensorFlow's environment defaults, e.g. oneDNN, before it is imported)
