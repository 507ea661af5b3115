import sys

from lakehouse_edge.cli import main

sys.exit(main())
