"""``lct-estimate``: peak memory per rank of a training run, without a GPU.

The real model is built on fake tensors inside a fake process group of ``world_size`` ranks,
parallelized by the trainer's own ``parallelize`` (activation checkpointing, FSDP2), and run
through the trainer's own step (``train.step.forward_backward``, clipping, AdamW) under
PyTorch's ``FSDPMemTracker``. See ``cli`` for the command line, ``scene`` for the geometry,
``run`` for the fake world, ``report`` for the output, ``search`` for the largest scene that
fits (``python -m lct_train.estimate.search``).
"""
