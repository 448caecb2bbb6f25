import sys

from loramerge_client.cli import main

sys.exit(main())
