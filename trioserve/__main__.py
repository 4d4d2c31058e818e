"""``python -m trioserve``: the same as the ``trioserve`` command."""

from trioserve._cli import run

if __name__ == "__main__":
    run()
