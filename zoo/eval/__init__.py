"""Evaluation of frozen encoders (METHODS.md, section F): feature extraction with an on-disk
cache (and of a folder of images: embed), InstDisc weighted kNN (k capped by the smallest
class), the linear probe (softmax regression on frozen features), clustering metrics (k-means
on frozen features: NMI, ARI, Hungarian-matched accuracy) and collapse monitors (embedding std,
effective rank)."""
from zoo.eval.cluster import cluster_evaluate, clustering_scores, hungarian_accuracy, kmeans_clusters
from zoo.eval.collapse import collapse_stats, effective_rank, embedding_std
from zoo.eval.features import embed, embed_folder, extract_features
from zoo.eval.knn import encoder_knn_accuracy, knn_accuracy, knn_evaluate, knn_k, knn_predict
from zoo.eval.linear import linear_probe

__all__ = ["cluster_evaluate", "clustering_scores", "hungarian_accuracy", "kmeans_clusters", "collapse_stats",
           "effective_rank", "embedding_std", "embed", "embed_folder", "extract_features",
           "encoder_knn_accuracy", "knn_accuracy", "knn_evaluate", "knn_k", "knn_predict", "linear_probe"]
