"""Explainability: the maps a model's attention computes, class maps (Grad-CAM, the model's own,
Integrated Gradients, Occlusion), and how well they localise and how faithful they are."""

from .cam import METHODS, class_maps, pair_maps
from .capture import attention_maps
from .scores import baseline_maps, deletion_insertion, localization_scores

__all__ = ["METHODS", "attention_maps", "baseline_maps", "class_maps", "deletion_insertion",
           "localization_scores", "pair_maps"]
