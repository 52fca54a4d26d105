"""Sampling: batched generation with a KV cache, stop tokens/strings, and scoring."""

from rewardlab.sampling.filters import SamplingParams, choose_tokens, filter_logits
from rewardlab.sampling.generate import GenerateOutput, generate
from rewardlab.sampling.score import completion_logprobs, sequence_logprob, token_logprobs
from rewardlab.sampling.stops import stop_string_table

__all__ = ["GenerateOutput", "SamplingParams", "choose_tokens", "completion_logprobs",
           "filter_logits", "generate", "sequence_logprob", "stop_string_table",
           "token_logprobs"]
