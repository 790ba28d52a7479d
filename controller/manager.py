"""Placeholder console script: replaced by the issue that owns it."""
import sys


def main() -> int:
    print(f"{sys.argv[0]}: not built yet", file=sys.stderr)
    return 2
