"""Write a run's report.html: ``cd training && python -m report OUTPUT_DIR`` prints the page's path (exit 2 when
OUTPUT_DIR holds none of the run's files)."""

import sys

from .page import main

if __name__ == "__main__":
    sys.exit(main())
