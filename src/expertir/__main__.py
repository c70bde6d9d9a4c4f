import sys

from expertir.cli.main import main

sys.exit(main())
