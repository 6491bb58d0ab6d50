"""``python -m edgec.agent``: the same command line as the zipapp."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
