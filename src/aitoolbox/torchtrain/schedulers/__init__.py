"""Learning-rate scheduler callbacks of the original AIToolbox (``schedulers.basic``, ``schedulers.warmup``), built on
:class:`~aitoolbox.loop.callbacks.LRSchedulerCallback`: their state is checkpointed and resumed with the run."""
