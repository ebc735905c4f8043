"""``python -m bench``: see bench/run.py; ``python -m bench sync``: see bench/sync.py."""

import sys

if sys.argv[1:2] == ["sync"]:
    from bench.sync import main as sync_main

    raise SystemExit(sync_main(sys.argv[2:]))

from bench.run import main

raise SystemExit(main())
