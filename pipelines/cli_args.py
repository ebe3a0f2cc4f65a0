"""Argument parsing shared by the commands that do not load Beam (generate, publish).

Bad flags exit 2 with one line naming the flag, the value and what is allowed (DESIGN.md's
exit codes), instead of argparse's usage dump.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def whole_number(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{value} is negative; give 0 or more"
                if minimum == 0
                else f"{value} is not {minimum} or more"
            )
        return value

    return parse
