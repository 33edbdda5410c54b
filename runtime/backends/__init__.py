"""Inference backends behind one interface (:class:`stae_deploy.runtime.backends.base.Backend`).

A new backend is a new file plus one entry in ``stae_deploy.runtime.predictor.BACKENDS``.
"""
