"""Errors that the CLI turns into exit codes (DESIGN.md, CLI contract).

``UsageError`` and ``UnusableInputError`` exit 2 with their message on stderr and no traceback.
"""

from __future__ import annotations


class NbmError(Exception):
    """Base of the errors nbm raises on purpose; the message is meant for a person."""

    exit_code = 2


class UsageError(NbmError):
    """A bad command line or configuration."""


class UnusableInputError(NbmError):
    """Input that cannot be used at all: a missing table, a missing required column, an unreadable file."""
