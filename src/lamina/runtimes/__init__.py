"""Runtimes: the bootstraps shipped into sandboxes, and the catalog of what this host can run.

Nothing here imports the rest of Lamina: a bootstrap is a plain client of the Runtime API.
"""
