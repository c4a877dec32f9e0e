"""The scripts and the torchvision stand-in here run in their own processes (``test_original_examples.py``), on
their own ``PYTHONPATH``: pytest does not import them (``--doctest-modules`` would)."""

collect_ignore_glob = ["examples/*", "standin/*"]
