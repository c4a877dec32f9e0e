"""How :class:`~aitoolbox.torchtrain.model.ModelWrap` feeds a plain ``nn.Module`` (the original AIToolbox path)."""

from aitoolbox.loop.model import AbstractModelFeedDefinition

__all__ = ["AbstractModelFeedDefinition"]
