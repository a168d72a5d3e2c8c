"""``python -m gradcheck``: see ``gradcheck.cli``."""

import sys

from gradcheck.cli import main

if __name__ == "__main__":
    sys.exit(main())
