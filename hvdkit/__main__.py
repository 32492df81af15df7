"""`python -m hvdkit` is the `hvdkit` command; horovodrun starts workers this way."""

import sys

from hvdkit.cli import main

sys.exit(main())
