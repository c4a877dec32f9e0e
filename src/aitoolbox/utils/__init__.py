"""The original AIToolbox module path ``aitoolbox.utils`` (the helpers a user script may call)."""

__all__: list[str] = []
