"""Former home of the highdicom readers, kept so that existing imports work.

Use :mod:`hdfsspec.highdicom.readers` (or the top-level ``hdfsspec.imread`` ...).
"""

from hdfsspec.highdicom.readers import *  # noqa: F403
from hdfsspec.highdicom.readers import __all__ as __all__
