import sys

from edge.entry import main

sys.exit(main())
