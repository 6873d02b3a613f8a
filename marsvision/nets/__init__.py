"""Torch networks: the architectures, their model files and how they run on a device.

Shared by training, export and the torch runtime of inference; needs the ``[train]`` extra.
"""
