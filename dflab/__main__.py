import sys

from dflab.cli import main

if __name__ == "__main__":  # guard: worker processes are spawned and re-import this module
    sys.exit(main())
