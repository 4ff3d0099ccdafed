"""Named presets: ``--preset NAME`` sets these flags unless they are given explicitly."""
from configs.presets import PRESETS

__all__ = ["PRESETS"]
