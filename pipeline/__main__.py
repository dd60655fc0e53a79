"""``python -m pipeline COMMAND``: the command line lives in :mod:`pipeline.cli.main`."""

from pipeline.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
