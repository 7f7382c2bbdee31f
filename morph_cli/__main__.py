import sys

from morph_cli.main import main

sys.exit(main())
