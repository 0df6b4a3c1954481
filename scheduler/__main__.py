"""``python -m scheduler`` is the ``mcsched`` command (the Ray CLI path runs this)."""

from scheduler.cli import main

if __name__ == "__main__":
    main()
