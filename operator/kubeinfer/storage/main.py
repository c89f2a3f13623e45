"""The ``kubeinfer storage-init URI DEST`` command: the init container's entrypoint.

Owns: argument parsing, logging setup for the duration of one run, and the exit-code contract
(0 success; 1 storage or transient failure; 2 usage or malformed URI; 3 missing object;
4 bad credentials; 5 checksum mismatch; 6 unreadable model config). On failure it prints
exactly one line to stderr, passed through ``Credentials.redact`` so no secret reaches the
pod's termination message.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pathlib
import sys
from collections.abc import Iterator

from kubeinfer.storage import credentials as credentials_
from kubeinfer.storage import errors, fetch, model_config, retrying

PROG = "kubeinfer storage-init"
USAGE_EXIT_CODE = 2
LOGGER_NAME = "kubeinfer.storage"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Fetch a model from URI (pvc://, https://, s3://, file://) into the model "
            "repository DEST, laid out as DEST/<model-name>/<version>/. Credentials come from "
            f"the environment: {credentials_.ACCESS_KEY_ID}, {credentials_.SECRET_ACCESS_KEY}, "
            f"{credentials_.SESSION_TOKEN}, AWS_ENDPOINT_URL or S3_ENDPOINT, "
            f"{credentials_.HTTP_AUTHORIZATION} (or {credentials_.HTTP_TOKEN}, a bearer token)."
        ),
    )
    parser.add_argument("uri", metavar="URI", help="the model's storageUri")
    parser.add_argument("dest", metavar="DEST", type=pathlib.Path, help="the model repository")
    parser.add_argument(
        "--model-name",
        default=fetch.DEFAULT_MODEL_NAME,
        help="directory a single file or version directory lands in (default: %(default)s)",
    )
    parser.add_argument(
        "--version", default=fetch.DEFAULT_VERSION, help="model version (default: %(default)s)"
    )
    parser.add_argument(
        "--file-name",
        help="name a single downloaded file is installed under, e.g. model.onnx "
        "(default: the URL's last segment)",
    )
    parser.add_argument(
        "--config",
        type=pathlib.Path,
        help="a generated per-model config to install as DEST/<model-name>/<its name>, merged "
        "over a config.pbtxt the model ships",
    )
    parser.add_argument(
        "--retries",
        type=_non_negative_int,
        default=3,
        help="retries after the first attempt, on transient errors only (default: %(default)s)",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=0.5,
        help="first retry delay in seconds; doubles per retry, capped at 8 (default: %(default)s)",
    )
    return parser


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def storage_init_main(argv: list[str] | None = None) -> int:
    """Run ``storage-init`` with ``argv`` (the words after ``storage-init``); return the exit code.

    Never raises for expected failures and never calls ``sys.exit``, so ``kubeinfer.cli`` can
    dispatch to it and tests can call it in-process.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        # argparse already printed usage or help; keep its code (0 for --help, 2 for errors).
        return exit_.code if isinstance(exit_.code, int) else USAGE_EXIT_CODE
    credentials = credentials_.Credentials.from_env(os.environ)
    try:
        with _logging_to_stdout(credentials):
            fetch.fetch(
                args.uri,
                args.dest,
                credentials=credentials,
                model_name=args.model_name,
                version=args.version,
                file_name=args.file_name,
                retry=retrying.RetryPolicy(attempts=args.retries + 1, base_delay=args.backoff),
            )
            if args.config is not None:
                model_config.install_config(args.config, args.dest, model_name=args.model_name)
    except ValueError as err:
        _fail(credentials, str(err))
        return USAGE_EXIT_CODE
    except errors.StorageError as err:
        _fail(credentials, str(err))
        return err.exit_code
    except Exception as err:
        # A bug still gets one redacted line, not a traceback that might quote a secret.
        _fail(credentials, f"unexpected {type(err).__name__}: {err}")
        return 1
    return 0


def _fail(credentials: credentials_.Credentials, message: str) -> None:
    # One line: kubelet keeps the tail of the log as the termination message, and the status
    # reconciler quotes it in the init-failure condition.
    line = " ".join(credentials.redact(message).split())
    print(f"{PROG}: error: {line}", file=sys.stderr)


class _RedactingFilter(logging.Filter):
    """Defence in depth: log lines quote servers and libraries, which might echo a secret."""

    def __init__(self, credentials: credentials_.Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._credentials.redact(record.getMessage())
        record.args = None
        return True


@contextlib.contextmanager
def _logging_to_stdout(credentials: credentials_.Credentials) -> Iterator[None]:
    """Route ``kubeinfer.storage`` progress to stdout for one run, then restore the logger."""
    # stdout, so stderr carries only the error line.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(_RedactingFilter(credentials))
    logger = logging.getLogger(LOGGER_NAME)
    previous = (logger.level, logger.propagate)
    logger.setLevel(logging.INFO)
    # Not propagated: if kubeinfer.cli configured the root logger, lines would print twice,
    # once without the redacting filter.
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = previous
