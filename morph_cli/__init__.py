"""The ``morph`` command: a thin argparse layer over the library (heavy imports are lazy)."""
