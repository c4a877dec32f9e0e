"""Data helpers of the original AIToolbox: feed definitions for :class:`~aitoolbox.torchtrain.model.ModelWrap` and
simple datasets."""
