import sys

from vmaudit.cli import main

sys.exit(main())
