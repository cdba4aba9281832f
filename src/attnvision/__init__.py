"""attnvision: visual attention modules, heads and backbones for image classification."""

from .attention import create_attn, list_attn
from .backbones import create_model, list_models, load_weights
from .data import list_datasets, load_dataset
from .heads import create_head, list_heads

__version__ = "0.1.0"
__all__ = ["create_attn", "create_head", "create_model", "list_attn", "list_datasets", "list_heads",
           "list_models", "load_dataset", "load_weights"]
