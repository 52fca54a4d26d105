"""rewardlab: reward modelling and test-time scaling for language models in JAX/Flax."""

from rewardlab.models.hf import load_pretrained, save_pretrained

__version__ = "0.1.0"
__all__ = ["load_pretrained", "save_pretrained"]
