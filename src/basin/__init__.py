"""basin: robust image classification with out-of-distribution (OOD) rejection.

API overview
------------
``basin.data``
    Verified datasets by name (``load_dataset("mnist", "train")``): MNIST, Fashion-MNIST,
    CIFAR-10, CIFAR-10-bw, notMNIST, Omniglot and synthetic noise, float32 NCHW in [0, 1].
``basin.models``
    ``AttractorNet``: the attractor paper's autoencoder with a softmax head on its bottleneck
    (``reconstruct`` = G, ``logits``/``probabilities`` = F).
``basin.losses``
    Reconstruction + Jacobian ("eigen") + classification losses; the Jacobian penalty by
    ``exact``, ``exact-fast`` or ``projection``.
``basin.training``
    Layer-wise pretraining and fine-tuning with early stopping, presets, resumable runs.
``basin.detectors``
    Every OOD detector shares one API (``fit``, ``score``, ``calibrate``, ``predict``);
    scores are *higher for in-distribution*. ``RejectOptionClassifier`` returns a label or a
    rejection per input.
``basin.attacks``
    L-infinity FGSM, PGD and Square attacks with pluggable objectives (cross-entropy, the
    paper's training cost, through the iteration loop, BPDA, detector-aware).
``basin.corruptions`` / ``basin.metrics``
    Seeded pixel-space corruptions; classification, OOD and reject-option metrics.
``basin.experiments``
    The evaluation runner and the paper reproductions with their reports.
"""

__version__ = "0.1.0"
