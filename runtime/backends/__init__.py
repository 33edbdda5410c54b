"""Inference backends behind one interface (:class:`runtime.backends.base.Backend`).

A new backend is a new file plus one entry in ``runtime.predictor.BACKENDS``.
"""
