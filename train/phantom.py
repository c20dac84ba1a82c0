"""Moved to the top-level package ``phantoms`` (issue 18): this re-export keeps ``from train.phantom import
...`` working in scripts written before the move. New code imports ``phantoms``."""

from phantoms import *  # noqa: F403
from phantoms import __all__  # noqa: F401
