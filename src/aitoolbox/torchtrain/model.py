"""Model contract: define models as :class:`TTModel` (or pass a plain ``nn.Module``, wrapped by :class:`ModelWrap`)."""

from aitoolbox.loop.model import ModelWrap, TTModel

__all__ = ["ModelWrap", "TTModel"]
