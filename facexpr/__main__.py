import sys

from facexpr.cli import main

sys.exit(main())
