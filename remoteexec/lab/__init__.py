"""remoteexec.lab: a real multi-host lab on one Linux machine.

Each "host" is a Linux network namespace with its own address and its own sshd, all
hanging off one bridge in the root namespace, so the master (running in the root
namespace) reaches them over real TCP and ssh, exactly as it would reach machines::

    from remoteexec.lab import Lab

    with Lab(hosts=3) as lab:
        lab.targets                 # ["root@10.A.B.11", "root@10.A.B.12", "root@10.A.B.13"]
        master.connect_all(lab.targets, identity_file=lab.identity_file,
                           known_hosts_file=lab.known_hosts_file)
        lab.partition(0, 1)         # silently drop traffic between hosts 0 and 1
        lab.partition(2)            # cut host 2 from everyone, the master included
        lab.heal()

Filesystems: each host has its own /tmp, /var/tmp, /run and home directory (its sshd,
and so everything started through it, runs in a mount namespace where the host's own
directories under ``<base_dir>/hN/fs/`` are bound there), so a file a service writes on a
host is not on the master at the same path; ``LabHost.path(p)`` reaches it from outside
(through ``/proc/<sshd pid>/root``).  The rest (/usr, /etc, the lab's own directory, the
project checkout) is shared, as on machines installed alike.  ``Lab(shared_fs=True)``
(``up --shared-fs``) shares /tmp and the rest too, to hand files to hosts that way.

Command line (leaves the lab running; state in ``/run/remoteexec-lab/<name>.json``)::

    python -m remoteexec.lab up [--hosts N] [--name NAME] [--json]
    python -m remoteexec.lab status [--json]
    python -m remoteexec.lab partition NAME A [B] | heal NAME
    python -m remoteexec.lab down NAME... | --stale | --all

Lifetime and stale labs: every lab is recorded in ``/run/remoteexec-lab/<name>.json``
(0600) before anything is created and the record is removed last.  The creating process
tears its labs down at exit (``atexit``) unless it called :meth:`Lab.detach` (the
``up`` command does).  :meth:`Lab.stale` lists labs whose creating process is gone
(crashed, killed, or detached and exited) plus unrecorded leftovers (``rxl-*``
namespaces, ``rxb*``/``rxv*`` links); :meth:`Lab.down_stale` removes those, and with
``all=True`` every lab, including ones live processes still use.

Needs root, iproute2, openssh-server (``/usr/sbin/sshd``), ``ssh-keygen`` and, for
partitions, nftables.  :meth:`Lab.available` says whether this machine qualifies.
Only the standard library is used, plus those commands.

Modules, one job each: ``lab`` (the :class:`Lab` class, tying the rest together),
``hosts`` (:class:`LabHost` and the plan of a lab's hosts), ``naming`` (names and
places a lab takes), ``subnets`` (subnet allocation), ``registry`` (the machine-wide
records, under a flock), ``network`` (namespaces, bridge, veths, /etc/netns),
``sshd`` (keys, config, launch), ``partitions`` (nftables cuts), ``teardown``,
``ownership`` (teardown at exit), ``machine`` (status and stale labs of the whole
machine), ``requirements``, ``commands`` (bounded subprocess calls), ``processes``
(pid liveness and killing) and ``errors`` (:class:`LabError`).

:func:`free_port` and :meth:`Lab.connect_options` are what tests, benchmarks and
scripts share to run services next to lab hosts and to connect to them.
"""

from __future__ import annotations

from .errors import LabError
from .hosts import LabHost
from .lab import MASTER, Lab
from .network import free_port

__all__ = ["MASTER", "Lab", "LabError", "LabHost", "free_port"]
