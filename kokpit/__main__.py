"""``python -m kokpit`` is the ``kokpit`` command."""

from kokpit.cli.main import main

raise SystemExit(main())
