"""Evaluation of frozen encoders (METHODS.md, section F): feature extraction with an on-disk
cache, InstDisc weighted kNN, the linear probe (softmax regression on frozen features) and
collapse monitors (embedding std, effective rank)."""
from zoo.eval.collapse import collapse_stats, effective_rank, embedding_std
from zoo.eval.features import extract_features
from zoo.eval.knn import encoder_knn_accuracy, knn_accuracy, knn_predict
from zoo.eval.linear import linear_probe

__all__ = ["collapse_stats", "effective_rank", "embedding_std", "extract_features", "encoder_knn_accuracy", "knn_accuracy", "knn_predict", "linear_probe"]
