"""The mpirun command hvdkit runs itself for a one-host MPI job, and horovodrun's mpirun
arguments for the others.

horovodrun spends seconds before any rank starts, most of it importing TensorFlow in a forked
probe that asks whether Horovod was built with MPI (even for a PyTorch job; README, "Launch
defaults", has the figures). On one host
with the MPI controller hvdkit therefore starts the ranks with mpirun directly, the way
Horovod's documentation runs it ("Horovod with Open MPI") and with the arguments horovodrun
would pass (`--bind-to none --map-by slot --mca pml ob1 --mca btl ^openib`, TCP on the
loopback interface, `-H localhost:N`), except that the `ofi` transport is left out too: its
teardown in MPI_Finalize makes every job end later. The ranks inherit
this process's environment, as under horovodrun. Multi-host, Gloo and elastic jobs still go
through horovodrun (ssh checks, interface discovery, Gloo's rendezvous, the elastic driver):
see hvdkit.launch.horovodrun. The user's arguments are merged over ours (hvdkit.launch.mpi_args).
"""

from __future__ import annotations

from hvdkit.errors import UserError
from hvdkit.launch.mpi_args import merge_mpi_args, option_groups
from hvdkit.launch.options import LaunchOptions

# What horovodrun itself puts on mpirun's command line (horovod/runner/mpi_run.py): a user
# value for these cannot replace horovodrun's, so such jobs must come through mpirun here.
HOROVODRUN_MCA = ("pml", "btl")


def for_horovodrun(options: LaunchOptions) -> tuple[list[str], str | None]:
    """The `--mpi-args` and `--network-interface` for horovodrun (multi-host MPI jobs): a user
    `--mca btl_tcp_if_include NIC` becomes horovodrun's `--network-interface NIC`, which sets
    that parameter itself; `pml` and `btl`, which horovodrun also sets, are refused."""
    args = options.effective_mpi_args()
    nic = options.network_interface
    kept: list[str] = []
    for key, words in option_groups(args):
        name = key[4:] if key.startswith("mca:") else None
        if name == "btl_tcp_if_include":
            if nic and nic != words[2]:
                raise UserError(f"--mpi-args sets btl_tcp_if_include {words[2]} but "
                                f"--network-interface is {nic}; give one of them")
            nic = words[2]
        elif name in HOROVODRUN_MCA:
            raise UserError(f"--mpi-args '--mca {name} ...': horovodrun sets {name} itself on "
                            "multi-host jobs; leave it out (on one host hvdkit runs mpirun "
                            "directly and takes it)")
        else:
            kept += words
    return kept, nic


def uses_mpirun(options: LaunchOptions) -> bool:
    """True where hvdkit starts the ranks with mpirun itself: one host, MPI, not elastic."""
    return options.launch_controller == "mpi" and not options.multi_host \
        and not options.elastic


def horovodrun_env_args(options: LaunchOptions) -> list[str]:
    """The HOROVOD_* settings horovodrun derives from its stall-inspector flags, as `-x`."""
    env = {}
    if not options.stall_check:
        env["HOROVOD_STALL_CHECK_DISABLE"] = "1"
    else:
        if options.stall_warning_seconds is not None:
            env["HOROVOD_STALL_CHECK_TIME_SECONDS"] = str(options.stall_warning_seconds)
        if options.stall_shutdown_seconds is not None:
            env["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] = str(options.stall_shutdown_seconds)
    return [word for name, value in env.items() for word in ("-x", f"{name}={value}")]


def mpirun_command(options: LaunchOptions, program: list[str]) -> list[str]:
    """The mpirun command that runs `program` (an argv) on `options.np` ranks of this host."""
    ours = ["--bind-to", "none", "--map-by", "slot", "--mca", "pml", "ob1",
            "--mca", "btl", "^openib,ofi",
            "--mca", "btl_tcp_if_include", options.network_interface or "lo"]
    args = merge_mpi_args(ours, options.effective_mpi_args())
    return ["mpirun", "--allow-run-as-root", "--tag-output", "-np", str(options.np),
            "-H", f"localhost:{options.np}", *args, *horovodrun_env_args(options), *program]
