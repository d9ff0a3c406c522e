import sys

from surgeon.cli import entry

if __name__ == "__main__":
    sys.exit(entry())
