"""Paper reproductions, end to end: each a folder ``protocol -> run -> tables -> report``.

The top layer of basin: a reproduction composes the library (data, models, training,
attacks, detectors, ``basin.robustness``) and presents with ``basin.report``; nothing below
imports from here. ``attractor`` (Alipour & SeyyedSalehi, MNIST) and ``feature_recon``
(Mulé & Shaner, CIFAR-10) reproduce published papers.
"""
