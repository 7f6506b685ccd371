"""kronedge: KroneckerBERT compression, distillation, export and an edge runtime.

The package root stays import-light (no torch) so that `kronedge --help` is instant; import the
pieces you need, e.g. ``from kronedge.surgery import kronize_``.
"""

__version__ = "0.1.0"
