"""A stand-in for the two pieces of torchvision the original AIToolbox examples use: ``datasets.MNIST`` and
``transforms``. MNIST cannot be downloaded here, so the images are scikit-learn's bundled 8x8 digits, scaled to 28x28
uint8 (the MNIST shape): the scripts train a real CNN on real (small) handwritten digits.

Only the test suite puts this folder on ``sys.path``; it is not shipped.
"""

from torchvision import datasets, transforms

__all__ = ["datasets", "transforms"]
