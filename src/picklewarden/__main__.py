import sys

from picklewarden.cli import main

sys.exit(main())
