"""mpirun arguments as groups of words: hvdkit's and the user's merged so that the user's win.

OpenMPI refuses an MCA parameter given twice, so `--mpi-args '--mca btl_tcp_if_include eth0'`
replaces hvdkit's value for that parameter instead of colliding with it; `--bind-to` and
`--map-by` replace hvdkit's likewise.
"""

from __future__ import annotations

import shlex

from hvdkit.errors import UserError

_MCA = ("--mca", "-mca", "--gmca", "-gmca")
_WITH_VALUE = ("--bind-to", "-bind-to", "--map-by", "-map-by", "-x")


def option_groups(args: list[str]) -> list[tuple[str, list[str]]]:
    """mpirun arguments cut into options, each with a key naming what it sets:
    `mca:<param>`, `bind-to`, `map-by`, `x:<variable>`; anything else is its own key."""
    groups: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word in _MCA and i + 2 < len(args):
            groups.append((f"mca:{args[i + 1]}", args[i:i + 3]))
            i += 3
        elif word in _WITH_VALUE and i + 1 < len(args):
            value = args[i + 1]
            key = f"x:{value.split('=', 1)[0]}" if word == "-x" else word.lstrip("-")
            groups.append((key, args[i:i + 2]))
            i += 2
        else:
            groups.append((f"word:{i}:{word}", [word]))
            i += 1
    return groups


def mca_names(args: list[str]) -> set[str]:
    """The MCA parameters these arguments set."""
    return {key[4:] for key, _ in option_groups(args) if key.startswith("mca:")}


def merge_mpi_args(ours: list[str], user: list[str]) -> list[str]:
    """hvdkit's arguments, less those the user's set again, then the user's."""
    given = {key for key, _ in option_groups(user)}
    kept = [word for key, words in option_groups(ours) if key not in given for word in words]
    return kept + list(user)


def parse_mpi_args(text: str) -> list[str]:
    """`--mpi-args` as the shell would split it; a quoting error names the flag."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UserError(f"--mpi-args {text!r}: {exc}") from None
