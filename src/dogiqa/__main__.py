import sys

from dogiqa.cli import main

sys.exit(main())
