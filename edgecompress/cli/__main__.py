"""``python -m edgecompress.cli``: the same entry point as the ``compress`` script."""

from edgecompress.cli.main import main

if __name__ == "__main__":  # spawned pipeline workers import this module as __mp_main__
    main()
