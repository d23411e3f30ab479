"""VESSA core library: template-guided vision-language segmentation for 3D Slicer.

Nothing in this package imports Slicer or Qt, so it runs in any Python, in
Slicer's PythonSlicer, from the `vessa` command line and under torchrun.
"""

from vessa.errors import VessaError

__version__ = "0.1.0"
__all__ = ["VessaError", "__version__"]
