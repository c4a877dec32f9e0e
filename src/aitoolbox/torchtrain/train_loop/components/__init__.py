"""The original AIToolbox module path ``aitoolbox.torchtrain.train_loop.components`` (prediction collate functions
and the message service; the loop's other components are internal here)."""

__all__: list[str] = []
