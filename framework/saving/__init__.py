"""Saving and loading: the HDF5 checkpoint format (config, weights, buffers,
optimizer and training state), written atomically and read without running
anything from the file.
"""
