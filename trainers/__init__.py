"""Command-line tools: zoo-train, zoo-eval, zoo-embed, zoo-quickstart."""
import os

# Quiet TensorFlow's C++ start-up chatter for command-line users (set it to 0 to see it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
