"""``python -m threeline.serve RUN_FOLDER [--port 8000] ...``: the same as ``threeline serve``."""

import argparse

from threeline.serve.cli import add_arguments, serve_from_args


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m threeline.serve",
                                     description="A web page and HTTP API to try a trained model.")
    add_arguments(parser)
    serve_from_args(parser.parse_args())


if __name__ == "__main__":
    main()
