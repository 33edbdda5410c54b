"""Benchmarks: ``stae bench`` (``bench*`` modules) and scripts that print numbers
(``python -m stae_deploy.benchmarks.NAME``); ``results/`` holds committed runs."""
