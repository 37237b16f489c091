"""Sub-LLM backends: one Protocol (``base.SubLlm``), one file per way of reaching a model."""

from .base import ChatMessage, Completion, SubLlm

__all__ = ["ChatMessage", "Completion", "SubLlm"]
