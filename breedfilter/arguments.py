"""Argument helpers the ``breedfilter`` commands share.

from breedfilter.arguments import positive_int, split_train_flags
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, with a message that says which rule failed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def split_train_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``[own options…] -- [train.py flags…]`` -> (own, train flags); no ``--`` means no train flags."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]
