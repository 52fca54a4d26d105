"""Sampling: batched generation with a KV cache."""

from rewardlab.sampling.generate import GenerateOutput, SamplingParams, filter_logits, generate

__all__ = ["GenerateOutput", "SamplingParams", "filter_logits", "generate"]
